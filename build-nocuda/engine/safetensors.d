build-nocuda/engine/safetensors.o: engine/safetensors.c \
 engine/safetensors.h engine/util.h
engine/safetensors.h:
engine/util.h:
