build-nocuda/autoq.o: autoq.c cli.h engine/util.h
cli.h:
engine/util.h:
