build-nocuda/scoring/score.o: scoring/score.c scoring/score.h \
 scoring/../datasets/npy.h scoring/../engine/forward.h \
 scoring/../engine/../kernels/kernels.h scoring/../engine/model.h \
 scoring/../engine/config.h scoring/../engine/safetensors.h \
 scoring/format.h scoring/groups.h scoring/../engine/util.h
scoring/score.h:
scoring/../datasets/npy.h:
scoring/../engine/forward.h:
scoring/../engine/../kernels/kernels.h:
scoring/../engine/model.h:
scoring/../engine/config.h:
scoring/../engine/safetensors.h:
scoring/format.h:
scoring/groups.h:
scoring/../engine/util.h:
