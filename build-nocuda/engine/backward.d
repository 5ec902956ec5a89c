build-nocuda/engine/backward.o: engine/backward.c engine/forward.h \
 engine/../kernels/kernels.h engine/model.h engine/config.h \
 engine/safetensors.h engine/util.h
engine/forward.h:
engine/../kernels/kernels.h:
engine/model.h:
engine/config.h:
engine/safetensors.h:
engine/util.h:
