# runc/tests/cross.mk - the C runner on small boards, proven under emulation (included by the Makefile).
#
#   make cross          everything below, two at a time
#   make cross-aarch64  64-bit ARM (Raspberry Pi 3/4/5 on a 64-bit OS), and cross-armhf, 32-bit
#                       ARM (armhf: 32-bit OSes, older Pis). Each cross-compiles runc/run,
#                       runc/tests/test_runc, test_batch and test_train (static, -Werror) with Debian's cross
#                       gcc and runs under qemu-user: the C tests (mmap and -DRUNC_NO_MMAP
#                       builds); the batch engine's C tests (CROSS_BATCH_N problems per shape,
#                       with default threads, 1, 2 and 3 threads, and the shipped models); the
#                       training engine's C tests (finite differences, threads, refusals);
#                       `make run`'s examples; CROSS_N classic test problems (`tinymath gen
#                       classic`, test split), fp32 and int8, with -j 1 and default threads,
#                       whose answers must equal the x86 build's byte for byte.
#   make cross-s390x    a big-endian machine: the runner must refuse the little-endian files
#                       with a clear message (the C tests check every entry point).
#   make nommap-test    the -DRUNC_NO_MMAP build's C tests, natively.
#   make cross-check    what `make test` runs: `make cross` (CROSS_CHECK_N problems) when the
#                       tools are installed; else one "skipped: install ..." line (plus
#                       nommap-test), or, under CI=true, a failure.
#
# The model: the shipped one (RUNC_MODEL, RUNC_TOKENIZER from runc.mk: models/tinymath.bin, fp32,
# and models/tinymath.q8.bin, int8; an int8 file is exported when there is no .q8.bin). Without
# it, a stand-in trained for a few seconds on the classic task (CROSS_STEPS steps) and exported
# fp32 and int8 with tinymath.export. Everything is built under build/cross/.
#
# Tools (Debian/Ubuntu; .ci/run installs them):
#   apt-get install gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf gcc-s390x-linux-gnu qemu-user

CROSS_DIR    ?= build/cross
CROSS_N      ?= 500
# `make test` answers fewer: qemu emulates floating point in software (about 50x slower than
# native here), and the check should add well under a minute on 2 cores
CROSS_CHECK_N ?= 60
# problems per model shape in the batch engine's C tests (runc/tests/test_batch.c), each solved with
# default threads, 1 thread, 2 and 3 threads: `make cross`, `make test`
CROSS_BATCH_N ?= 20
CROSS_CHECK_BATCH_N ?= 3
CROSS_STEPS  ?= 150
CROSS_CFLAGS ?= $(RUNC_CFLAGS) -Werror -static
CROSS_ARCHS  := aarch64 armhf

CROSS_TRIPLE_aarch64 := aarch64-linux-gnu
CROSS_TRIPLE_armhf   := arm-linux-gnueabihf
CROSS_TRIPLE_s390x   := s390x-linux-gnu
CROSS_QEMUNAME_aarch64 := qemu-aarch64
CROSS_QEMUNAME_armhf   := qemu-arm
CROSS_QEMUNAME_s390x   := qemu-s390x
CROSS_PKG_aarch64 := gcc-aarch64-linux-gnu
CROSS_PKG_armhf   := gcc-arm-linux-gnueabihf
CROSS_PKG_s390x   := gcc-s390x-linux-gnu

# qemu-user installs qemu-aarch64, qemu-user-static qemu-aarch64-static: either will do
cross_cc   = $(CROSS_TRIPLE_$(1))-gcc
cross_qemu = $(firstword $(shell command -v $(CROSS_QEMUNAME_$(1)) $(CROSS_QEMUNAME_$(1))-static 2>/dev/null))
# QEMU_LD_PREFIX: only a dynamically linked build (CROSS_CFLAGS without -static) needs the sysroot
cross_run  = QEMU_LD_PREFIX=/usr/$(CROSS_TRIPLE_$(1)) $(call cross_qemu,$(1))
cross_have = $(and $(shell command -v $(call cross_cc,$(1)) 2>/dev/null),$(call cross_qemu,$(1)))

# ---- the model and the problems ----------------------------------------------------------------
# the first 8 bytes of a llama2.c v1 file: "ak42" little-endian, then version 1
cross_version = $(shell od -An -tx1 -N8 $(1) 2>/dev/null | tr -d ' \n')
CROSS_V1 := 32346b6101000000
CROSS_SHIPPED := $(and $(wildcard $(RUNC_MODEL)),$(wildcard $(RUNC_TOKENIZER)))
CROSS_STANDIN := $(CROSS_DIR)/standin
CROSS_FP32 := $(CROSS_DIR)/model/fp32.bin
CROSS_INT8 := $(CROSS_DIR)/model/int8.bin
CROSS_ID   := $(CROSS_DIR)/model/id
CROSS_PROBLEMS := $(CROSS_DIR)/classic-$(CROSS_N).txt
TINYMATH := $(VENV)/bin/tinymath
# the Python steps (gen, train, export) need the package, not a fresh build of its C engine
CROSS_VENV := $(if $(wildcard $(TINYMATH)),,$(VENV)/.installed)

# CROSS_SRC: the fp32 model (a .bin or a checkpoint), CROSS_SRC_INT8: the shipped int8 file
# (models/tinymath.q8.bin beside models/tinymath.bin), else exported from the fp32 file
ifneq ($(CROSS_SHIPPED),)
CROSS_SRC := $(RUNC_MODEL)
CROSS_SRC_INT8 := $(wildcard $(RUNC_MODEL:.bin=.q8.bin))
CROSS_TOK := $(RUNC_TOKENIZER)
CROSS_MODEL_NOTE := shipped model $(RUNC_MODEL)$(if $(CROSS_SRC_INT8), and $(CROSS_SRC_INT8))
else
CROSS_SRC := $(CROSS_STANDIN)/run/ckpt.pt
CROSS_SRC_INT8 :=
CROSS_TOK := $(CROSS_STANDIN)/run/tokenizer.bin
CROSS_MODEL_NOTE := stand-in model, $(CROSS_STEPS) training steps: $(RUNC_MODEL) is not there
endif

# Which model the files under $(CROSS_DIR) come from: rewritten when that changes (the shipped
# model arriving, RUNC_MODEL=...), so that nothing stale is compared.
.PHONY: cross-id-force
$(CROSS_ID): cross-id-force
	@mkdir -p $(@D)
	@echo "$(CROSS_SRC) $(CROSS_SRC_INT8) $(CROSS_TOK)" > $@.tmp; \
	 if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; fi

$(CROSS_STANDIN)/run/ckpt.pt: | $(CROSS_VENV)
	@mkdir -p $(CROSS_STANDIN)
	@echo "cross: training a stand-in model ($(CROSS_STEPS) steps) as $(RUNC_MODEL) is not there"
	@$(TINYMATH) train --task classic --out $(CROSS_STANDIN)/run --dim 32 --n-layers 2 --n-heads 4 \
	  --max-steps $(CROSS_STEPS) --eval-every 100000 --seed 0 --threads 2 --no-progress --force \
	  > $(CROSS_STANDIN)/train.log 2>&1 || { cat $(CROSS_STANDIN)/train.log; exit 1; }
$(CROSS_STANDIN)/run/tokenizer.bin: $(CROSS_STANDIN)/run/ckpt.pt ;

# fp32: a v1 file as it is, anything else exported; int8: the shipped one, else exported
$(CROSS_FP32): $(CROSS_SRC) $(CROSS_ID) | $(CROSS_VENV)
	@if [ "$(call cross_version,$<)" = $(CROSS_V1) ]; then cp $< $@; \
	 else $(TINYMATH) export $< --format v1 --out $@ > /dev/null; fi
$(CROSS_INT8): $(CROSS_FP32) $(CROSS_SRC_INT8) $(CROSS_ID) | $(CROSS_VENV)
	@if [ -n "$(CROSS_SRC_INT8)" ]; then cp $(CROSS_SRC_INT8) $@; \
	 else $(TINYMATH) export $< --format v2 --out $@ > /dev/null; fi

$(CROSS_PROBLEMS): | $(CROSS_VENV)
	@mkdir -p $(@D)
	@$(TINYMATH) gen classic --out $(CROSS_DIR)/classic > /dev/null
	@head -n $(CROSS_N) $(CROSS_DIR)/classic/test.txt | sed 's/ = .*/ =/' > $@.tmp && mv $@.tmp $@

# ---- builds ----------------------------------------------------------------------------------
# The same sources and flags as runc.mk's builds (the runner links the batch engine, with
# threads), plus -static and -Werror.
CROSS_RUN_SRCS := runc/run.c runc/runc.c runc/batch.c -lm $(RUNC_THREADS)
CROSS_TEST_SRCS := $(RUNC_TEST_INC) $(RUNC_TEST_DIR)/test_runc.c runc/runc.c -lm
CROSS_BATCH_SRCS := $(RUNC_TEST_INC) $(RUNC_TEST_DIR)/test_batch.c runc/runc.c runc/batch.c -lm $(RUNC_THREADS)
CROSS_TRAIN_SRCS := -Irunc $(RUNC_TEST_DIR)/test_train.c runc/train.c runc/runc.c -lm $(RUNC_THREADS)

$(CROSS_DIR)/bin/%/run: runc/run.c $(RUNC_LIB) $(RUNC_BATCH)
	@mkdir -p $(@D)
	$(call cross_cc,$*) $(CROSS_CFLAGS) -o $@ $(CROSS_RUN_SRCS)
$(CROSS_DIR)/bin/%/test_runc: $(RUNC_TEST_DIR)/test_runc.c $(RUNC_TEST_UTIL) $(RUNC_LIB)
	@mkdir -p $(@D)
	$(call cross_cc,$*) $(CROSS_CFLAGS) -o $@ $(CROSS_TEST_SRCS)
$(CROSS_DIR)/bin/%/test_runc_nommap: $(RUNC_TEST_DIR)/test_runc.c $(RUNC_TEST_UTIL) $(RUNC_LIB)
	@mkdir -p $(@D)
	$(call cross_cc,$*) $(CROSS_CFLAGS) -DRUNC_NO_MMAP -o $@ $(CROSS_TEST_SRCS)
$(CROSS_DIR)/bin/%/test_batch: $(RUNC_TEST_DIR)/test_batch.c $(RUNC_TEST_UTIL) $(RUNC_LIB) $(RUNC_BATCH)
	@mkdir -p $(@D)
	$(call cross_cc,$*) $(CROSS_CFLAGS) -o $@ $(CROSS_BATCH_SRCS)
$(CROSS_DIR)/bin/%/test_train: $(RUNC_TEST_DIR)/test_train.c $(TRAIN_LIB)
	@mkdir -p $(@D)
	$(call cross_cc,$*) $(CROSS_CFLAGS) -o $@ $(CROSS_TRAIN_SRCS)
$(CROSS_DIR)/bin/x86/run_nommap: runc/run.c $(RUNC_LIB) $(RUNC_BATCH)
	@mkdir -p $(@D)
	$(RUNC_CC) $(RUNC_CFLAGS) -Werror -DRUNC_NO_MMAP -o $@ $(CROSS_RUN_SRCS)
$(CROSS_DIR)/bin/native/test_runc_nommap: $(RUNC_TEST_DIR)/test_runc.c $(RUNC_TEST_UTIL) $(RUNC_LIB)
	@mkdir -p $(@D)
	$(RUNC_CC) $(RUNC_CFLAGS) -Werror -DRUNC_NO_MMAP -o $@ $(CROSS_TEST_SRCS)

# The x86 reference answers (runc.mk's runc/run: the batch engine with default threads and the
# kernels it picks for this CPU), fp32 and int8; the no-mmap build must give the same ones.
$(CROSS_DIR)/x86-%-$(CROSS_N).txt: runc/run $(CROSS_DIR)/bin/x86/run_nommap $(CROSS_DIR)/model/%.bin \
    $(CROSS_TOK) $(CROSS_PROBLEMS) $(CROSS_ID)
	@./runc/run $(CROSS_DIR)/model/$*.bin -z $(CROSS_TOK) -m batch -f $(CROSS_PROBLEMS) > $@.tmp
	@$(CROSS_DIR)/bin/x86/run_nommap $(CROSS_DIR)/model/$*.bin -z $(CROSS_TOK) -m batch -f $(CROSS_PROBLEMS) \
	  | cmp -s - $@.tmp || { echo "cross: the -DRUNC_NO_MMAP build answers differently ($*)" >&2; exit 1; }
	@mv $@.tmp $@
$(CROSS_DIR)/x86-examples.txt: runc/run $(CROSS_FP32) $(CROSS_TOK) $(CROSS_ID)
	@for p in $(RUNC_EXAMPLES); do \
	  a=$$(./runc/run $(CROSS_FP32) -z $(CROSS_TOK) -m calc -i "$$p") || exit 1; echo "$$p $$a"; \
	done > $@.tmp && mv $@.tmp $@

# ---- the checks ------------------------------------------------------------------------------
.PHONY: cross cross-all cross-check nommap-test cross-s390x $(addprefix cross-,$(CROSS_ARCHS))

# Run the C tests $(2) (labelled $(1)): their closing "N passed, M failed" line in $$last, or
# the failures and exit 1
cross_ctest = out=$$($(2) 2>&1); rc=$$?; last=$$(printf '%s\n' "$$out" | tail -n 1); \
	if [ $$rc -ne 0 ]; then printf '%s\n' "$$out" | grep FAIL | head -n 20 >&2; \
	  echo "cross $(1): C tests FAILED: $$last" >&2; exit 1; fi

$(addprefix cross-,$(CROSS_ARCHS)): cross-%: $(CROSS_DIR)/bin/%/run $(CROSS_DIR)/bin/%/test_runc \
    $(CROSS_DIR)/bin/%/test_runc_nommap $(CROSS_DIR)/bin/%/test_batch $(CROSS_DIR)/bin/%/test_train \
    $(CROSS_DIR)/x86-fp32-$(CROSS_N).txt \
    $(CROSS_DIR)/x86-int8-$(CROSS_N).txt $(CROSS_DIR)/x86-examples.txt
	@start=$$(date +%s); bin=$(CROSS_DIR)/bin/$*; \
	$(call cross_ctest,$*,$(call cross_run,$*) $$bin/test_runc); tests="$$last"; \
	$(call cross_ctest,$* no-mmap,$(call cross_run,$*) $$bin/test_runc_nommap); tests_nm="$$last"; \
	$(call cross_ctest,$* batch engine,$(call cross_run,$*) $$bin/test_batch $(CROSS_BATCH_N) \
	  $(CROSS_FP32) $(CROSS_INT8) $(CROSS_TOK)); tests_b="$$last"; \
	$(call cross_ctest,$* training engine,$(call cross_run,$*) $$bin/test_train); tests_t="$$last"; \
	for p in $(RUNC_EXAMPLES); do \
	  a=$$($(call cross_run,$*) $$bin/run $(CROSS_FP32) -z $(CROSS_TOK) -m calc -i "$$p") || exit 1; \
	  echo "$$p $$a"; \
	done > $(CROSS_DIR)/$*-examples.txt; \
	if ! cmp -s $(CROSS_DIR)/$*-examples.txt $(CROSS_DIR)/x86-examples.txt; then \
	  echo "cross $*: make run's answers differ from x86's:" >&2; \
	  diff $(CROSS_DIR)/x86-examples.txt $(CROSS_DIR)/$*-examples.txt >&2; exit 1; fi; \
	for f in fp32 int8; do for j in 0 1; do \
	  out=$(CROSS_DIR)/$*-$$f-j$$j-$(CROSS_N).txt; \
	  $(call cross_run,$*) $$bin/run $(CROSS_DIR)/model/$$f.bin -z $(CROSS_TOK) -m batch -j $$j \
	    -f $(CROSS_PROBLEMS) > $$out || { echo "cross $*: the batch run failed ($$f, -j $$j)" >&2; exit 1; }; \
	  if ! cmp -s $$out $(CROSS_DIR)/x86-$$f-$(CROSS_N).txt; then \
	    echo "cross $*: $$f answers (-j $$j) differ from x86's (problem, x86, $*):" >&2; \
	    paste -d '|' $(CROSS_PROBLEMS) $(CROSS_DIR)/x86-$$f-$(CROSS_N).txt $$out \
	      | awk -F'|' '$$2 != $$3' | head -n 20 >&2; exit 1; fi; \
	done; done; \
	echo "cross $*: C tests $$tests (no-mmap: $$tests_nm); batch engine tests $$tests_b; $$tests_t; make run's" \
	  "$$(wc -l < $(CROSS_DIR)/x86-examples.txt) examples and $(CROSS_N) classic problems (fp32 and int8; 1 and" \
	  "default threads) answered as on x86 [$(CROSS_MODEL_NOTE); $$(( $$(date +%s) - start )) s]"

cross-s390x: $(CROSS_DIR)/bin/s390x/run $(CROSS_DIR)/bin/s390x/test_runc $(CROSS_FP32) $(CROSS_TOK)
	@$(call cross_ctest,s390x,$(call cross_run,s390x) $(CROSS_DIR)/bin/s390x/test_runc); tests="$$last"; \
	msg=$$($(call cross_run,s390x) $(CROSS_DIR)/bin/s390x/run $(CROSS_FP32) -z $(CROSS_TOK) -m calc -i "1 + 1 =" 2>&1); \
	if [ $$? -eq 0 ] || ! printf '%s' "$$msg" | grep -q little-endian; then \
	  echo "cross s390x: the runner did not refuse the model on a big-endian host: $$msg" >&2; exit 1; fi; \
	echo "cross s390x (big-endian): C tests $$tests; the runner refuses: $$msg"

nommap-test: $(CROSS_DIR)/bin/native/test_runc_nommap
	@$(call cross_ctest,native no-mmap,$(CROSS_DIR)/bin/native/test_runc_nommap); \
	echo "nommap-test: -DRUNC_NO_MMAP build's C tests: $$last"

# two at a time (qemu runs one guest CPU per process)
cross:
	@$(MAKE) --no-print-directory -j2 -Otarget cross-all
cross-all: $(addprefix cross-,$(CROSS_ARCHS)) nommap-test $(if $(call cross_have,s390x),cross-s390x)
	@if [ -n "$(call cross_have,s390x)" ]; then :; \
	 elif [ "$(CI)" = true ]; then echo "cross s390x: FAILED: CI must run the big-endian check;" \
	   "install $(CROSS_PKG_s390x) and qemu-user (.ci/run does)" >&2; exit 1; \
	 else echo "cross s390x: skipped: install $(CROSS_PKG_s390x) and qemu-user for the big-endian check"; fi

# `make test`: the ARM checks when their tools are installed. A missing tool is one clear line on
# a user's machine, and a failure in CI (CI=true), where .ci/run installs them.
CROSS_MISSING = $(foreach a,$(CROSS_ARCHS),$(if $(shell command -v $(call cross_cc,$(a)) 2>/dev/null),,$(CROSS_PKG_$(a))) \
  $(if $(call cross_qemu,$(a)),,qemu-user($(CROSS_QEMUNAME_$(a)))))
cross-check:
	@missing="$(strip $(CROSS_MISSING))"; \
	if [ -z "$$missing" ]; then $(MAKE) --no-print-directory cross CROSS_N=$(CROSS_CHECK_N) CROSS_BATCH_N=$(CROSS_CHECK_BATCH_N); \
	elif [ "$(CI)" = true ]; then \
	  echo "cross-check: FAILED: CI must run the ARM checks, but these are missing: $$missing (.ci/run installs them with apt-get)" >&2; \
	  exit 1; \
	else \
	  echo "cross-check: skipped: install gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user (apt-get) for the ARM checks (missing: $$missing)"; \
	  $(MAKE) --no-print-directory nommap-test; \
	fi

TEST_TARGETS += cross-check
