build-nocuda/kernels/quant.o: kernels/quant.c kernels/kernels.h
kernels/kernels.h:
