build-nocuda/cli_args.o: cli_args.c cli.h engine/util.h
cli.h:
engine/util.h:
