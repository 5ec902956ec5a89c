build-nocuda/scoring/format.o: scoring/format.c scoring/format.h \
 scoring/../kernels/kernels.h scoring/../engine/util.h
scoring/format.h:
scoring/../kernels/kernels.h:
scoring/../engine/util.h:
