build-nocuda/kernels/kl.o: kernels/kl.c kernels/kernels.h
kernels/kernels.h:
