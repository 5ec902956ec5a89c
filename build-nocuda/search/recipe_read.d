build-nocuda/search/recipe_read.o: search/recipe_read.c \
 search/../engine/util.h search/recipe.h search/../scoring/format.h \
 search/../scoring/../kernels/kernels.h search/../scoring/table.h \
 search/../engine/model.h search/../engine/config.h \
 search/../engine/safetensors.h search/verify.h search/../datasets/npy.h
search/../engine/util.h:
search/recipe.h:
search/../scoring/format.h:
search/../scoring/../kernels/kernels.h:
search/../scoring/table.h:
search/../engine/model.h:
search/../engine/config.h:
search/../engine/safetensors.h:
search/verify.h:
search/../datasets/npy.h:
