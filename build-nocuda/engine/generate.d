build-nocuda/engine/generate.o: engine/generate.c engine/generate.h \
 engine/util.h
engine/generate.h:
engine/util.h:
