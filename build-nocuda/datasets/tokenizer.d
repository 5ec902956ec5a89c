build-nocuda/datasets/tokenizer.o: datasets/tokenizer.c \
 datasets/tokenizer.h datasets/../engine/util.h
datasets/tokenizer.h:
datasets/../engine/util.h:
