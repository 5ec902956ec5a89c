build-nocuda/cli_common.o: cli_common.c cli_common.h cli.h \
 datasets/data.h datasets/npy.h scoring/score.h \
 scoring/../engine/forward.h scoring/../engine/../kernels/kernels.h \
 scoring/../engine/model.h scoring/../engine/config.h \
 scoring/../engine/safetensors.h scoring/format.h scoring/groups.h \
 scoring/table.h engine/gpu.h engine/util.h
cli_common.h:
cli.h:
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
