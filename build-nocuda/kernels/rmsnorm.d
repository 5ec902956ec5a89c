build-nocuda/kernels/rmsnorm.o: kernels/rmsnorm.c kernels/kernels.h
kernels/kernels.h:
