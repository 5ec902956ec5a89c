build-nocuda/search/verify.o: search/verify.c search/verify.h \
 search/../datasets/npy.h search/../engine/model.h \
 search/../engine/config.h search/../engine/safetensors.h \
 search/../scoring/format.h search/../scoring/../kernels/kernels.h \
 search/../engine/forward.h search/../engine/util.h
search/verify.h:
search/../datasets/npy.h:
search/../engine/model.h:
search/../engine/config.h:
search/../engine/safetensors.h:
search/../scoring/format.h:
search/../scoring/../kernels/kernels.h:
search/../engine/forward.h:
search/../engine/util.h:
