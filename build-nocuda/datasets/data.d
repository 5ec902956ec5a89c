build-nocuda/datasets/data.o: datasets/data.c datasets/data.h \
 datasets/npy.h datasets/../engine/util.h datasets/tokenizer.h
datasets/data.h:
datasets/npy.h:
datasets/../engine/util.h:
datasets/tokenizer.h:
