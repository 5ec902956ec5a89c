build-nocuda/scoring/groups.o: scoring/groups.c scoring/groups.h \
 scoring/../engine/model.h scoring/../engine/config.h \
 scoring/../engine/safetensors.h scoring/../engine/util.h
scoring/groups.h:
scoring/../engine/model.h:
scoring/../engine/config.h:
scoring/../engine/safetensors.h:
scoring/../engine/util.h:
