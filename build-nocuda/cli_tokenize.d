build-nocuda/cli_tokenize.o: cli_tokenize.c cli.h cli_common.h \
 datasets/data.h datasets/npy.h scoring/score.h \
 scoring/../engine/forward.h scoring/../engine/../kernels/kernels.h \
 scoring/../engine/model.h scoring/../engine/config.h \
 scoring/../engine/safetensors.h scoring/format.h scoring/groups.h \
 scoring/table.h engine/gpu.h datasets/tokenizer.h engine/util.h
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
datasets/tokenizer.h:
engine/util.h:
