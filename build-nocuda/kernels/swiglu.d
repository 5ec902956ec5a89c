build-nocuda/kernels/swiglu.o: kernels/swiglu.c kernels/kernels.h
kernels/kernels.h:
