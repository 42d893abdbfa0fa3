# runc/runc.mk - the C runner's make targets (included by the top-level Makefile).
#
#   make run                   answer a few example problems with the default model
#   make run PROMPT="36 / 3 =" answer one problem
#   make calc                  interactive calculator (type "36 / 3", EOF ends)
#                              make run and make calc pass run -r RUNC_RANGE, the operand range the model
#                              trained on, read from its card (runc/card_range.awk): "100 + 1" gets
#                              a notice; RUNC_RANGE= turns it off, RUNC_RANGE=0-99:90-99 sets it
#   make run V=1, make calc V=1  the whole answer: a model that shows its work prints its steps,
#                              then '#', then the final answer (default: the final answer only)
#   make run-native            runc/run-native: the runner built with -march=native (optional; this CPU only)
#
# Only the system C compiler, libm and pthreads are needed: no Python. The C tests, the
# ThreadSanitizer check and the ARM checks are runc/tests/*.mk; the fuzzers runc/fuzz/fuzz.mk.

RUNC_CC       ?= $(CC)
RUNC_CFLAGS   ?= -std=c99 -O3 -Wall -Wextra -pedantic
RUNC_MODEL     ?= models/tinymath.bin
RUNC_TOKENIZER ?= models/tokenizer.bin
RUNC_EXAMPLES  ?= "24 + 82 =" "36 / 3 =" "7 * 8 =" "91 - 45 ="
PROMPT ?=
V ?=
RUNC_CARD  ?= $(RUNC_MODEL:.bin=.json)
# (no card, or no awk: no range, and the calculator answers without notices)
RUNC_RANGE ?= $(shell test -f "$(RUNC_CARD)" && command -v awk >/dev/null 2>&1 && awk -f runc/card_range.awk "$(RUNC_CARD)")
RUNC_RANGE_FLAG = $(if $(RUNC_RANGE),-r $(RUNC_RANGE))
# V=1: run's -v (the whole answer, steps included)
RUNC_VERBOSE = $(if $(filter-out 0,$(V)),-v)

RUNC_LIB := runc/runc.c runc/runc.h runc/runc_impl.h
# the batch engine (threads): the runner and its tests link it too
RUNC_BATCH := runc/batch.c runc/batch_kernels.c.inc
RUNC_THREADS ?= -pthread
# -march=native: every kernel compiled for this CPU (no run-time dispatch). Never
# -ffast-math: the batch engine's answers must stay bit-identical to runc_solve's.
RUNC_NATIVE_CFLAGS ?= $(RUNC_CFLAGS) -march=native -mtune=generic

.PHONY: run calc run-native

runc/run: runc/run.c $(RUNC_LIB) $(RUNC_BATCH)
	$(RUNC_CC) $(RUNC_CFLAGS) -o $@ runc/run.c runc/runc.c runc/batch.c -lm $(RUNC_THREADS)

runc/run-native: runc/run.c $(RUNC_LIB) $(RUNC_BATCH)
	$(RUNC_CC) $(RUNC_NATIVE_CFLAGS) -o $@ runc/run.c runc/runc.c runc/batch.c -lm $(RUNC_THREADS)

run-native: runc/run-native

# The model check is in the recipe so that a missing model says so in one line.
run: runc/run
	@test -f "$(RUNC_MODEL)" || { echo "make run: no model at $(RUNC_MODEL) (train and export one, or pass RUNC_MODEL=path/to/model.bin)" >&2; exit 1; }
	@test -f "$(RUNC_TOKENIZER)" || { echo "make run: no tokenizer at $(RUNC_TOKENIZER) (pass RUNC_TOKENIZER=path/to/tokenizer.bin)" >&2; exit 1; }
	@if [ -n "$(PROMPT)" ]; then set -- "$(PROMPT)"; else set -- $(RUNC_EXAMPLES); fi; \
	for p in "$$@"; do \
	  a=$$(./runc/run "$(RUNC_MODEL)" -z "$(RUNC_TOKENIZER)" -m calc $(RUNC_VERBOSE) $(RUNC_RANGE_FLAG) -i "$$p") || exit 1; \
	  echo "$$p $$a"; \
	done

calc: runc/run
	@test -f "$(RUNC_MODEL)" || { echo "make calc: no model at $(RUNC_MODEL) (train and export one, or pass RUNC_MODEL=path/to/model.bin)" >&2; exit 1; }
	@./runc/run "$(RUNC_MODEL)" -z "$(RUNC_TOKENIZER)" -m calc $(RUNC_VERBOSE) $(RUNC_RANGE_FLAG)
