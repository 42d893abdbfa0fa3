# runc/fuzz/fuzz.mk - libFuzzer harnesses of the C loaders, the encoder and the batch engine
# (included by the Makefile).
#
#   make fuzz                     each harness for FUZZ_SECONDS (default 60) in turn;
#                                 `make -j4 fuzz` runs the four at once
#   make fuzz FUZZ_SECONDS=600    the long run (benchmark-style; corpora persist in build/fuzz/corpus/)
#   make fuzz-model | fuzz-tokenizer | fuzz-encode | fuzz-batch     one harness
#   make fuzz-check               the short run `make test` does (FUZZ_CHECK_SECONDS each, fresh corpus)
#   make fuzz-repro FUZZ_INPUT=build/fuzz/crashes/model-crash-...   replay one input
#
# runc/fuzz/fuzz_regressions/ keeps the (tiny) inputs of crashes found and fixed, named <harness>-<what>;
# fuzz-check replays them before fuzzing.
#
# The harnesses (runc/fuzz/fuzz_model.c, fuzz_tokenizer.c, fuzz_encode.c, fuzz_batch.c) are built with
# clang and -fsanitize=fuzzer,address,undefined (fuzz_batch also with runc/batch.c and pthreads: it
# checks runc_batch_solve against runc_solve on fuzzed prompt lists). Seeds come from real exports made
# at build time by runc/fuzz/fuzz_seeds.py (tinymath.export, tinymath.tokenizer: small random-weight
# models, SentencePiece tokenizers), never committed. Crashes land in build/fuzz/crashes/ and fail the
# target.
#
# Without clang (or its libFuzzer runtime) the fuzz step is skipped with a message saying so;
# under CI=true it fails instead, so that CI can never pass without fuzzing.

FUZZ_CC            ?= clang
FUZZ_SECONDS       ?= 60
FUZZ_CHECK_SECONDS ?= 6
# runc.h from runc/, the test programs' helpers (test_util.h) from runc/tests/
FUZZ_INC           := -Irunc -I$(RUNC_TEST_DIR)
FUZZ_FLAGS         ?= -std=c99 -Wall -Wextra -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
                      -fno-sanitize-recover=all
FUZZ_DIR           := build/fuzz
FUZZ_SRC           := runc/fuzz
FUZZ_NAMES         := model tokenizer encode batch
FUZZ_BINS          := $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
# per-harness input size caps: the model seeds are up to ~40 KB, tokenizers ~6 KB
FUZZ_MAXLEN_model     := 65536
FUZZ_MAXLEN_tokenizer := 16384
FUZZ_MAXLEN_encode    := 8192
# fuzz_batch: 5 settings bytes and up to 48 prompts, some longer than the context allows
FUZZ_MAXLEN_batch     := 4096
# ASan/UBSan settings for every run: a leak or any UB report is a crash
FUZZ_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            RUNC_FUZZ_TOKENIZERS="$$(cat $(FUZZ_DIR)/tokenizers.txt)" \
            RUNC_FUZZ_BATCH="$$(cat $(FUZZ_DIR)/batch_models.txt)"
FUZZ_OPTS = -max_len=$(FUZZ_MAXLEN_$*) -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix=$(FUZZ_DIR)/crashes/$*-

.PHONY: fuzz fuzz-check fuzz-toolchain $(FUZZ_NAMES:%=fuzz-%) $(FUZZ_NAMES:%=fuzz-check-%) fuzz-repro fuzz-clean

TEST_TARGETS += fuzz-check

# Is there a clang that links -fsanitize=fuzzer? "yes" or empty; probed on first use, once.
FUZZ_HAVE = $(eval FUZZ_HAVE := $(FUZZ_PROBE))$(FUZZ_HAVE)
FUZZ_PROBE = $(shell printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
              > /tmp/tinymath_fuzz_probe_$$$$.c && \
              $(FUZZ_CC) -fsanitize=fuzzer,address,undefined /tmp/tinymath_fuzz_probe_$$$$.c \
                -o /tmp/tinymath_fuzz_probe_$$$$ >/dev/null 2>&1 && echo yes; \
              rm -f /tmp/tinymath_fuzz_probe_$$$$ /tmp/tinymath_fuzz_probe_$$$$.c)

fuzz-toolchain:
	@if [ "$(FUZZ_HAVE)" != yes ]; then \
	  if [ "$(CI)" = true ]; then \
	    echo "fuzz: FAILED: '$(FUZZ_CC)' cannot build libFuzzer harnesses (-fsanitize=fuzzer), and CI=true" >&2; \
	    echo "fuzz: install clang and its runtime (apt-get install -y clang libclang-rt-dev) - .ci/run does" >&2; \
	    exit 1; \
	  fi; \
	fi

$(FUZZ_DIR)/fuzz_%: $(FUZZ_SRC)/fuzz_%.c $(RUNC_TEST_UTIL) $(RUNC_LIB) | fuzz-toolchain
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_INC) -o $@ $< runc/runc.c -lm

# The batch engine's harness: runc/batch.c too, and its worker threads. Without comparison tracing
# (trace-cmp): in the matrix kernels' loops it took 85% of the time (8x fewer runs a second), and
# edge coverage still sees every kernel path; libFuzzer's memcmp/strcmp hooks stay.
$(FUZZ_DIR)/fuzz_batch: $(FUZZ_SRC)/fuzz_batch.c $(RUNC_TEST_UTIL) $(RUNC_LIB) $(RUNC_BATCH) | fuzz-toolchain
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fno-sanitize-coverage=trace-cmp $(FUZZ_INC) -o $@ $< runc/runc.c runc/batch.c \
	  -lm $(RUNC_THREADS)

# Seeds from real exports (numpy + sentencepiece + tinymath, no torch).
# (They need the package installed, not a newer install: no prerequisite on the venv's stamp.)
$(FUZZ_DIR)/seeds.stamp: $(FUZZ_SRC)/fuzz_seeds.py
	@test -x $(PY) || $(MAKE) --no-print-directory venv
	$(PY) $(FUZZ_SRC)/fuzz_seeds.py $(FUZZ_DIR)
	@touch $@

# The short run of `make test`: each harness on its seeds for FUZZ_CHECK_SECONDS, writing new
# inputs to a scratch corpus (the seeds stay as they are).
fuzz-check:
	@if [ "$(FUZZ_HAVE)" = yes ]; then \
	  $(MAKE) --no-print-directory $(FUZZ_NAMES:%=fuzz-check-%); \
	elif [ "$(CI)" = true ]; then \
	  $(MAKE) --no-print-directory fuzz-toolchain; \
	else \
	  echo "fuzz-check: SKIPPED - '$(FUZZ_CC)' with libFuzzer (-fsanitize=fuzzer) is not available here;" \
	       "the loaders are not fuzzed by this run. Install clang (Debian/Ubuntu: apt-get install clang" \
	       "libclang-rt-dev) to enable it; CI installs it and never skips."; \
	fi

$(FUZZ_NAMES:%=fuzz-check-%): fuzz-check-%: $(FUZZ_DIR)/fuzz_% $(FUZZ_DIR)/seeds.stamp
	@rm -rf $(FUZZ_DIR)/scratch/$* && mkdir -p $(FUZZ_DIR)/scratch/$* $(FUZZ_DIR)/crashes
	@regress="$$(ls $(FUZZ_SRC)/fuzz_regressions/$*-* 2>/dev/null)"; if [ -n "$$regress" ]; then \
	  echo "fuzz-check: $* replays $$(echo $$regress | wc -w) earlier crash input(s) ($(FUZZ_SRC)/fuzz_regressions/)"; \
	  $(FUZZ_ENV) $(FUZZ_DIR)/fuzz_$* $(FUZZ_OPTS) $$regress > $(FUZZ_DIR)/regress_$*.log 2>&1 || \
	  { tail -40 $(FUZZ_DIR)/regress_$*.log; echo "fuzz-check: $* regression input crashes again" >&2; exit 1; }; fi
	@echo "fuzz-check: $* for $(FUZZ_CHECK_SECONDS) s"
	@$(FUZZ_ENV) $(FUZZ_DIR)/fuzz_$* $(FUZZ_OPTS) -max_total_time=$(FUZZ_CHECK_SECONDS) \
	  $(FUZZ_DIR)/scratch/$* $(FUZZ_DIR)/seeds/$* > $(FUZZ_DIR)/check_$*.log 2>&1 || \
	  { tail -60 $(FUZZ_DIR)/check_$*.log; echo "fuzz-check: $* FAILED (crash input in $(FUZZ_DIR)/crashes/;" \
	    "replay: make fuzz-repro FUZZ_INPUT=<file>)" >&2; exit 1; }
	@grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|Done [0-9]+ runs" $(FUZZ_DIR)/check_$*.log | \
	  tr '\n' ' ' | sed 's/^/fuzz-check: $* ok: /'; echo

fuzz: $(FUZZ_NAMES:%=fuzz-%)

$(FUZZ_NAMES:%=fuzz-%): fuzz-%: $(FUZZ_DIR)/fuzz_% $(FUZZ_DIR)/seeds.stamp
	@if [ "$(FUZZ_HAVE)" != yes ]; then echo "fuzz: SKIPPED - no clang with libFuzzer (see fuzz-check)"; exit 0; fi; \
	mkdir -p $(FUZZ_DIR)/corpus/$* $(FUZZ_DIR)/crashes; \
	echo "fuzz: $* for $(FUZZ_SECONDS) s (log: $(FUZZ_DIR)/fuzz_$*.log)"; \
	$(FUZZ_ENV) $(FUZZ_DIR)/fuzz_$* $(FUZZ_OPTS) -max_total_time=$(FUZZ_SECONDS) \
	  $(FUZZ_DIR)/corpus/$* $(FUZZ_DIR)/seeds/$* > $(FUZZ_DIR)/fuzz_$*.log 2>&1; rc=$$?; \
	grep -E "^#[0-9]+.*(DONE|pulse)" $(FUZZ_DIR)/fuzz_$*.log | tail -1; \
	grep -E "^stat::" $(FUZZ_DIR)/fuzz_$*.log | tr '\n' ' '; echo; \
	echo "fuzz: $* corpus: $$(ls $(FUZZ_DIR)/corpus/$* | wc -l) inputs"; \
	if [ $$rc -ne 0 ]; then tail -60 $(FUZZ_DIR)/fuzz_$*.log; \
	  echo "fuzz: $* FOUND A CRASH (input in $(FUZZ_DIR)/crashes/)" >&2; exit 1; fi

# Line coverage of runc/runc.c by each harness's corpus (seeds + what fuzzing found), via llvm-cov.
LLVM_PROFDATA ?= llvm-profdata
LLVM_COV      ?= llvm-cov
.PHONY: fuzz-coverage
fuzz-coverage: $(FUZZ_DIR)/seeds.stamp
	@mkdir -p $(FUZZ_DIR)/cov
	@for n in $(FUZZ_NAMES); do \
	  $(FUZZ_CC) -std=c99 -g -O1 -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping \
	    $(FUZZ_INC) -o $(FUZZ_DIR)/cov/fuzz_$$n $(FUZZ_SRC)/fuzz_$$n.c runc/runc.c runc/batch.c -lm \
	    $(RUNC_THREADS) || exit 1; \
	  mkdir -p $(FUZZ_DIR)/corpus/$$n; \
	  LLVM_PROFILE_FILE=$(FUZZ_DIR)/cov/$$n.profraw RUNC_FUZZ_TOKENIZERS="$$(cat $(FUZZ_DIR)/tokenizers.txt)" \
	    RUNC_FUZZ_BATCH="$$(cat $(FUZZ_DIR)/batch_models.txt)" \
	    $(FUZZ_DIR)/cov/fuzz_$$n -runs=0 $(FUZZ_DIR)/corpus/$$n $(FUZZ_DIR)/seeds/$$n >/dev/null 2>&1; \
	  $(LLVM_PROFDATA) merge -sparse $(FUZZ_DIR)/cov/$$n.profraw -o $(FUZZ_DIR)/cov/$$n.profdata || exit 1; \
	  printf '%-10s corpus %5s inputs: ' $$n "$$(ls $(FUZZ_DIR)/corpus/$$n $(FUZZ_DIR)/seeds/$$n | wc -l)"; \
	  $(LLVM_COV) report $(FUZZ_DIR)/cov/fuzz_$$n -instr-profile=$(FUZZ_DIR)/cov/$$n.profdata runc/runc.c | \
	    awk '/^TOTAL/ {print "runc.c regions " $$4 ", functions " $$7 ", lines " $$10}'; \
	done; \
	$(LLVM_PROFDATA) merge -sparse $(FUZZ_DIR)/cov/*.profraw -o $(FUZZ_DIR)/cov/all.profdata; \
	printf '%-10s ' all; $(LLVM_COV) report $(FUZZ_DIR)/cov/fuzz_model -object $(FUZZ_DIR)/cov/fuzz_tokenizer \
	  -object $(FUZZ_DIR)/cov/fuzz_encode -object $(FUZZ_DIR)/cov/fuzz_batch -instr-profile=$(FUZZ_DIR)/cov/all.profdata runc/runc.c | \
	  awk '/^TOTAL/ {print "runc.c regions " $$4 ", functions " $$7 ", lines " $$10}'

fuzz-repro: $(FUZZ_BINS) $(FUZZ_DIR)/seeds.stamp
	@test -n "$(FUZZ_INPUT)" || { echo "usage: make fuzz-repro FUZZ_INPUT=path (the harness is the name's prefix)" >&2; exit 2; }
	@name=$$(basename "$(FUZZ_INPUT)" | sed 's/-.*//'); \
	$(FUZZ_ENV) $(FUZZ_DIR)/fuzz_$$name "$(FUZZ_INPUT)"

fuzz-clean:
	rm -rf $(FUZZ_DIR)
