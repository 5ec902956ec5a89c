build-nocuda/datasets/npy.o: datasets/npy.c datasets/npy.h \
 datasets/../engine/util.h
datasets/npy.h:
datasets/../engine/util.h:
