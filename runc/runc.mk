# runc/runc.mk - the C runner's make targets (included by the top-level Makefile).
#
#   make run                   answer a few example problems with the default model
#   make run PROMPT="36 / 3 =" answer one problem
#   make calc                  interactive calculator (type "36 / 3", EOF ends)
#   make c-test                build and run runc/test_runc and runc/test_batch, plain and under ASan+UBSan,
#                              and runc/test_quant (the batch engine's int8 quantizer against its reference)
#   make run-native            runc/run-native: the runner built with -march=native (optional; this CPU only)
#
# Only the system C compiler, libm and pthreads are needed: no Python.

RUNC_CC       ?= $(CC)
RUNC_CFLAGS   ?= -std=c99 -O3 -Wall -Wextra -pedantic
RUNC_SANFLAGS ?= -std=c99 -O1 -g -Wall -Wextra -pedantic -fsanitize=address,undefined \
                 -fno-omit-frame-pointer -fno-sanitize-recover=all
RUNC_MODEL     ?= models/tinymath.bin
RUNC_TOKENIZER ?= models/tokenizer.bin
RUNC_EXAMPLES  ?= "24 + 82 =" "36 / 3 =" "7 * 8 =" "91 - 45 ="
PROMPT ?=

RUNC_LIB := runc/runc.c runc/runc.h runc/runc_impl.h
# helpers shared by the C test programs and fuzz harnesses (never by the library)
RUNC_TEST_UTIL := runc/test_util.h
# the batch engine (threads): the runner and its tests link it too
RUNC_BATCH := runc/batch.c runc/batch_kernels.c.inc
RUNC_THREADS ?= -pthread
# -march=native: every kernel compiled for this CPU (no run-time dispatch). Never
# -ffast-math: the batch engine's answers must stay bit-identical to runc_solve's.
RUNC_NATIVE_CFLAGS ?= $(RUNC_CFLAGS) -march=native -mtune=generic

.PHONY: run calc c-test run-native

runc/run: runc/run.c $(RUNC_LIB) $(RUNC_BATCH)
	$(RUNC_CC) $(RUNC_CFLAGS) -o $@ runc/run.c runc/runc.c runc/batch.c -lm $(RUNC_THREADS)

runc/run-native: runc/run.c $(RUNC_LIB) $(RUNC_BATCH)
	$(RUNC_CC) $(RUNC_NATIVE_CFLAGS) -o $@ runc/run.c runc/runc.c runc/batch.c -lm $(RUNC_THREADS)

run-native: runc/run-native

runc/test_batch: runc/test_batch.c $(RUNC_TEST_UTIL) $(RUNC_LIB) $(RUNC_BATCH)
	$(RUNC_CC) $(RUNC_CFLAGS) -o $@ runc/test_batch.c runc/runc.c runc/batch.c -lm $(RUNC_THREADS)

runc/test_quant: runc/test_quant.c $(RUNC_TEST_UTIL) $(RUNC_LIB) $(RUNC_BATCH)
	$(RUNC_CC) $(RUNC_CFLAGS) -Irunc -o $@ runc/test_quant.c -lm $(RUNC_THREADS)

runc/test_batch_asan: runc/test_batch.c $(RUNC_TEST_UTIL) $(RUNC_LIB) $(RUNC_BATCH)
	$(RUNC_CC) $(RUNC_SANFLAGS) -o $@ runc/test_batch.c runc/runc.c runc/batch.c -lm $(RUNC_THREADS)

runc/test_runc: runc/test_runc.c $(RUNC_TEST_UTIL) $(RUNC_LIB)
	$(RUNC_CC) $(RUNC_CFLAGS) -o $@ runc/test_runc.c runc/runc.c -lm

runc/test_runc_asan: runc/test_runc.c $(RUNC_TEST_UTIL) $(RUNC_LIB)
	$(RUNC_CC) $(RUNC_SANFLAGS) -o $@ runc/test_runc.c runc/runc.c -lm

# The model check is in the recipe so that a missing model says so in one line.
run: runc/run
	@test -f "$(RUNC_MODEL)" || { echo "make run: no model at $(RUNC_MODEL) (train and export one, or pass RUNC_MODEL=path/to/model.bin)" >&2; exit 1; }
	@test -f "$(RUNC_TOKENIZER)" || { echo "make run: no tokenizer at $(RUNC_TOKENIZER) (pass RUNC_TOKENIZER=path/to/tokenizer.bin)" >&2; exit 1; }
	@if [ -n "$(PROMPT)" ]; then set -- "$(PROMPT)"; else set -- $(RUNC_EXAMPLES); fi; \
	for p in "$$@"; do \
	  a=$$(./runc/run "$(RUNC_MODEL)" -z "$(RUNC_TOKENIZER)" -m calc -i "$$p") || exit 1; \
	  echo "$$p $$a"; \
	done

calc: runc/run
	@test -f "$(RUNC_MODEL)" || { echo "make calc: no model at $(RUNC_MODEL) (train and export one, or pass RUNC_MODEL=path/to/model.bin)" >&2; exit 1; }
	@./runc/run "$(RUNC_MODEL)" -z "$(RUNC_TOKENIZER)" -m calc

# Also checks that the read-only build (-DRUNC_NO_MMAP) compiles cleanly.
# The batch engine's test: 10,000 problems on random models and on the shipped
# ones when present (fewer under ASan); its fallbacks (no threads, no vector
# types) must compile cleanly too.
# the shipped models, when all three files are there
RUNC_SHIPPED := $(RUNC_MODEL) models/tinymath.q8.bin $(RUNC_TOKENIZER)
RUNC_BATCH_TEST_ARGS = $(if $(filter-out $(wildcard $(RUNC_SHIPPED)),$(RUNC_SHIPPED)),,$(RUNC_SHIPPED))

c-test: runc/test_runc runc/test_runc_asan runc/test_batch runc/test_batch_asan runc/test_quant
	$(RUNC_CC) $(RUNC_CFLAGS) -Werror -DRUNC_NO_MMAP -fsyntax-only runc/runc.c
	$(RUNC_CC) $(RUNC_CFLAGS) -Werror -fsyntax-only runc/batch.c
	$(RUNC_CC) $(RUNC_CFLAGS) -Werror -DRUNC_NO_THREADS -DRUNC_NO_VECTOR_EXT -fsyntax-only runc/batch.c
	./runc/test_runc
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ./runc/test_runc_asan
	./runc/test_quant
	./runc/test_batch 10000 $(RUNC_BATCH_TEST_ARGS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ./runc/test_batch_asan 100 $(RUNC_BATCH_TEST_ARGS)
