build-nocuda/cli_model.o: cli_model.c cli.h cli_common.h datasets/data.h \
 datasets/npy.h scoring/score.h scoring/../engine/forward.h \
 scoring/../engine/../kernels/kernels.h scoring/../engine/model.h \
 scoring/../engine/config.h scoring/../engine/safetensors.h \
 scoring/format.h scoring/groups.h scoring/table.h engine/gpu.h \
 engine/generate.h engine/util.h search/recipe.h search/verify.h \
 datasets/bpe_train.h
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
engine/generate.h:
engine/util.h:
search/recipe.h:
search/verify.h:
datasets/bpe_train.h:
