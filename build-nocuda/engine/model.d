build-nocuda/engine/model.o: engine/model.c engine/model.h \
 engine/config.h engine/safetensors.h engine/util.h
engine/model.h:
engine/config.h:
engine/safetensors.h:
engine/util.h:
