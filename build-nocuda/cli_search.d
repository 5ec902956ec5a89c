build-nocuda/cli_search.o: cli_search.c cli.h cli_common.h \
 datasets/data.h datasets/npy.h scoring/score.h \
 scoring/../engine/forward.h scoring/../engine/../kernels/kernels.h \
 scoring/../engine/model.h scoring/../engine/config.h \
 scoring/../engine/safetensors.h scoring/format.h scoring/groups.h \
 scoring/table.h engine/gpu.h engine/util.h search/recipe.h \
 search/verify.h
cli.h:
cli_common.h:
datasets/data.h:
datasets/npy.h:
scoring/score.h:
scoring/../engine/forward.h:
scoring/../engine/../kernels/kernels.h:
scoring/../engine/model.h:
scoring/../engine/config.h:
scoring/../engine/safetensors.h:
scoring/format.h:
scoring/groups.h:
scoring/table.h:
engine/gpu.h:
engine/util.h:
search/recipe.h:
search/verify.h:
