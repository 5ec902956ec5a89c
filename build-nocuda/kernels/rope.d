build-nocuda/kernels/rope.o: kernels/rope.c kernels/kernels.h
kernels/kernels.h:
