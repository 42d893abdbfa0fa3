# runc/tests/train.mk - the C training engine's checks (included by the top-level Makefile).
#
#   make train-c-test   build runc/tests/test_train and run it plain (-Werror), under ASan+UBSan, and
#                       under ThreadSanitizer (its tests use 2 and 3 worker threads); the builds without
#                       threads and without vector types (plain loops) are checked to compile
#   make train-prof     runc/tests/prof_train: steps on batches dumped by bench/dump_batches.py, timed
#                       (tokens per CPU second, for a shared machine), for perf or A/B runs
#
# The agreement with PyTorch, tensor by tensor, is tests/test_train_c.py (pytest).

TRAIN_CC       ?= $(or $(RUNC_CC),$(CC))
TRAIN_CFLAGS   ?= -std=c99 -O2 -Wall -Wextra -pedantic -Werror
TRAIN_SANFLAGS ?= -std=c99 -O1 -g -Wall -Wextra -pedantic -fsanitize=address,undefined \
                  -fno-omit-frame-pointer -fno-sanitize-recover=all
TRAIN_TSANFLAGS ?= -std=c99 -O1 -g -Wall -Wextra -pedantic -fsanitize=thread
TRAIN_LIB := runc/train.c runc/train.h runc/train_kernels.c.inc runc/runc.c runc/runc.h runc/runc_impl.h
TRAIN_TEST_BINS := runc/tests/test_train runc/tests/test_train_asan runc/tests/test_train_tsan

.PHONY: train-c-test train-prof

runc/tests/test_train: runc/tests/test_train.c $(TRAIN_LIB)
	$(TRAIN_CC) $(TRAIN_CFLAGS) -Irunc -o $@ runc/tests/test_train.c runc/train.c runc/runc.c -lm -pthread

runc/tests/test_train_asan: runc/tests/test_train.c $(TRAIN_LIB)
	$(TRAIN_CC) $(TRAIN_SANFLAGS) -Irunc -o $@ runc/tests/test_train.c runc/train.c runc/runc.c -lm -pthread

runc/tests/test_train_tsan: runc/tests/test_train.c $(TRAIN_LIB)
	$(TRAIN_CC) $(TRAIN_TSANFLAGS) -Irunc -o $@ runc/tests/test_train.c runc/train.c runc/runc.c -lm -pthread

runc/tests/test_train_prof: runc/tests/prof_train.c $(TRAIN_LIB)
	$(TRAIN_CC) $(TRAIN_CFLAGS) -O3 -Irunc -o $@ runc/tests/prof_train.c runc/train.c runc/runc.c -lm -pthread

train-prof: runc/tests/test_train_prof

train-c-test: $(TRAIN_TEST_BINS)
	$(TRAIN_CC) $(TRAIN_CFLAGS) -DRUNC_NO_THREADS -fsyntax-only runc/train.c
	$(TRAIN_CC) $(TRAIN_CFLAGS) -DRUNC_NO_VECTOR_EXT -fsyntax-only runc/train.c
	./runc/tests/test_train
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 ./runc/tests/test_train_asan
	TSAN_OPTIONS=halt_on_error=1:allocator_may_return_null=1 ./runc/tests/test_train_tsan

TEST_TARGETS += train-c-test
