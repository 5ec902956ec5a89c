build-nocuda/search/knapsack.o: search/knapsack.c search/knapsack.h \
 search/../engine/util.h
search/knapsack.h:
search/../engine/util.h:
