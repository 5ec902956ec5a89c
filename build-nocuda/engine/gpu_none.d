build-nocuda/engine/gpu_none.o: engine/gpu_none.c engine/gpu.h \
 engine/../scoring/format.h engine/../scoring/../kernels/kernels.h \
 engine/../scoring/groups.h engine/../scoring/../engine/model.h \
 engine/../scoring/../engine/config.h \
 engine/../scoring/../engine/safetensors.h engine/util.h
engine/gpu.h:
engine/../scoring/format.h:
engine/../scoring/../kernels/kernels.h:
engine/../scoring/groups.h:
engine/../scoring/../engine/model.h:
engine/../scoring/../engine/config.h:
engine/../scoring/../engine/safetensors.h:
engine/util.h:
