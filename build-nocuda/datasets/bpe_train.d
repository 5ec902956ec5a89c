build-nocuda/datasets/bpe_train.o: datasets/bpe_train.c \
 datasets/bpe_train.h datasets/../engine/util.h
datasets/bpe_train.h:
datasets/../engine/util.h:
