# runc/tests/tests.mk - the C tests of the runc library (included by the top-level Makefile).
#
#   make c-test    build and run runc/tests/test_runc and runc/tests/test_batch, plain and under
#                  ASan+UBSan, and runc/tests/test_quant (the batch engine's int8 quantizer against
#                  its reference); tests/test_runc_c.py runs it in `make test`
#
# test_util.h holds the helpers these programs share with the fuzz harnesses and the TSan driver
# (never used by the library). The builds use runc.mk's compiler, flags and source lists.

RUNC_SANFLAGS ?= -std=c99 -O1 -g -Wall -Wextra -pedantic -fsanitize=address,undefined \
                 -fno-omit-frame-pointer -fno-sanitize-recover=all
RUNC_TEST_DIR  := runc/tests
RUNC_TEST_UTIL := $(RUNC_TEST_DIR)/test_util.h
# the test programs include runc.h (and test_quant runc.c and batch.c themselves) from runc/
RUNC_TEST_INC  := -Irunc

.PHONY: c-test

$(RUNC_TEST_DIR)/test_runc: $(RUNC_TEST_DIR)/test_runc.c $(RUNC_TEST_UTIL) $(RUNC_LIB)
	$(RUNC_CC) $(RUNC_CFLAGS) $(RUNC_TEST_INC) -o $@ $< runc/runc.c -lm

$(RUNC_TEST_DIR)/test_runc_asan: $(RUNC_TEST_DIR)/test_runc.c $(RUNC_TEST_UTIL) $(RUNC_LIB)
	$(RUNC_CC) $(RUNC_SANFLAGS) $(RUNC_TEST_INC) -o $@ $< runc/runc.c -lm

$(RUNC_TEST_DIR)/test_batch: $(RUNC_TEST_DIR)/test_batch.c $(RUNC_TEST_UTIL) $(RUNC_LIB) $(RUNC_BATCH)
	$(RUNC_CC) $(RUNC_CFLAGS) $(RUNC_TEST_INC) -o $@ $< runc/runc.c runc/batch.c -lm $(RUNC_THREADS)

$(RUNC_TEST_DIR)/test_batch_asan: $(RUNC_TEST_DIR)/test_batch.c $(RUNC_TEST_UTIL) $(RUNC_LIB) $(RUNC_BATCH)
	$(RUNC_CC) $(RUNC_SANFLAGS) $(RUNC_TEST_INC) -o $@ $< runc/runc.c runc/batch.c -lm $(RUNC_THREADS)

$(RUNC_TEST_DIR)/test_quant: $(RUNC_TEST_DIR)/test_quant.c $(RUNC_TEST_UTIL) $(RUNC_LIB) $(RUNC_BATCH)
	$(RUNC_CC) $(RUNC_CFLAGS) $(RUNC_TEST_INC) -o $@ $< -lm $(RUNC_THREADS)

# The batch engine's test: 10,000 problems on random models and on the shipped ones when all
# three files are there (fewer under ASan).
RUNC_SHIPPED := $(RUNC_MODEL) models/tinymath.q8.bin $(RUNC_TOKENIZER)
RUNC_BATCH_TEST_ARGS = $(if $(filter-out $(wildcard $(RUNC_SHIPPED)),$(RUNC_SHIPPED)),,$(RUNC_SHIPPED))
RUNC_TEST_ENV_ASAN := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1

# Also checks that the read-only build (-DRUNC_NO_MMAP) and the batch engine's fallbacks (no
# threads, no vector types) compile cleanly.
c-test: $(addprefix $(RUNC_TEST_DIR)/,test_runc test_runc_asan test_batch test_batch_asan test_quant)
	$(RUNC_CC) $(RUNC_CFLAGS) -Werror -DRUNC_NO_MMAP -fsyntax-only runc/runc.c
	$(RUNC_CC) $(RUNC_CFLAGS) -Werror -fsyntax-only runc/batch.c
	$(RUNC_CC) $(RUNC_CFLAGS) -Werror -DRUNC_NO_THREADS -DRUNC_NO_VECTOR_EXT -fsyntax-only runc/batch.c
	./$(RUNC_TEST_DIR)/test_runc
	$(RUNC_TEST_ENV_ASAN) ./$(RUNC_TEST_DIR)/test_runc_asan
	./$(RUNC_TEST_DIR)/test_quant
	./$(RUNC_TEST_DIR)/test_batch 200 $(RUNC_BATCH_TEST_ARGS)
	$(RUNC_TEST_ENV_ASAN) ./$(RUNC_TEST_DIR)/test_batch_asan 10 $(RUNC_BATCH_TEST_ARGS)
