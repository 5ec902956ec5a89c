build-nocuda/engine/config.o: engine/config.c engine/config.h \
 engine/util.h
engine/config.h:
engine/util.h:
