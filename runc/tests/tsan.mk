# runc/tests/tsan.mk - the batch engine under ThreadSanitizer (and ASan+UBSan) (included by the
# top-level Makefile).
#
#   make tsan-check     runc/tests/tsan_batch.c: batch answers == runc_solve's with 4 workers x 3
#                       slots, and engines and states sharing one model at once, built with
#                       -fsanitize=thread (any data race fails it), then the same driver with
#                       -fsanitize=address,undefined
# Runs in make test. Skipped (saying so) when no compiler here has TSan; under CI=true a missing
# TSan fails. The compiler: clang where there is one (fuzz.mk's FUZZ_CC), else cc.

TSAN_CC    ?= $(if $(shell command -v $(FUZZ_CC) 2>/dev/null),$(FUZZ_CC),$(CC))
TSAN_FLAGS ?= -std=c99 -Wall -Wextra -g -O1 -fno-omit-frame-pointer
TSAN_DIR   := build/tsan
TSAN_SRCS  := $(RUNC_TEST_DIR)/tsan_batch.c runc/runc.c runc/batch.c
# with the test programs' helpers (runc/tests/test_util.h)
TSAN_DEPS  := $(RUNC_TEST_DIR)/tsan_batch.c $(RUNC_LIB) $(RUNC_BATCH) $(RUNC_TEST_UTIL)

TEST_TARGETS += tsan-check
.PHONY: tsan-check

$(TSAN_DIR)/tsan_batch: $(TSAN_DEPS)
	@mkdir -p $(TSAN_DIR)
	$(TSAN_CC) $(TSAN_FLAGS) -fsanitize=thread $(RUNC_TEST_INC) -o $@ $(TSAN_SRCS) -lm -lpthread

$(TSAN_DIR)/asan_batch: $(TSAN_DEPS)
	@mkdir -p $(TSAN_DIR)
	$(TSAN_CC) $(TSAN_FLAGS) -fsanitize=address,undefined -fno-sanitize-recover=all $(RUNC_TEST_INC) -o $@ $(TSAN_SRCS) -lm -lpthread

# "yes" when TSan programs build and run; "setarch" when they run only without address-space
# randomisation (older TSan runtimes on kernels with more ASLR bits); empty otherwise.
TSAN_HAVE = $(eval TSAN_HAVE := $(TSAN_PROBE))$(TSAN_HAVE)
TSAN_PROBE = $(shell printf '#include <pthread.h>\nstatic void *f(void *a) { return a; }\nint main(void) { pthread_t t; pthread_create(&t, 0, f, 0); return pthread_join(t, 0); }\n' \
               > /tmp/tinymath_tsan_probe_$$$$.c && \
               $(TSAN_CC) -fsanitize=thread /tmp/tinymath_tsan_probe_$$$$.c -o /tmp/tinymath_tsan_probe_$$$$ \
                 -lpthread >/dev/null 2>&1 && \
               { /tmp/tinymath_tsan_probe_$$$$ >/dev/null 2>&1 && echo yes || \
                 { setarch $$(uname -m) -R /tmp/tinymath_tsan_probe_$$$$ >/dev/null 2>&1 && echo setarch; }; }; \
               rm -f /tmp/tinymath_tsan_probe_$$$$ /tmp/tinymath_tsan_probe_$$$$.c)
TSAN_LAUNCH = $(if $(filter setarch,$(TSAN_HAVE)),setarch $$(uname -m) -R)

tsan-check:
	@if [ -z "$(TSAN_HAVE)" ]; then \
	  if [ "$(CI)" = true ]; then \
	    echo "tsan-check: FAILED: '$(TSAN_CC)' cannot build and run -fsanitize=thread programs, and CI=true" >&2; exit 1; \
	  fi; \
	  echo "tsan-check: SKIPPED - '$(TSAN_CC)' has no working ThreadSanitizer here; the batch engine is not" \
	       "checked for data races by this run (install clang, as for the fuzz step)"; \
	else \
	  $(MAKE) --no-print-directory $(TSAN_DIR)/tsan_batch $(TSAN_DIR)/asan_batch && \
	  echo "tsan-check: the batch engine under ThreadSanitizer" && \
	  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 $(TSAN_LAUNCH) $(TSAN_DIR)/tsan_batch && \
	  echo "tsan-check: the same driver under AddressSanitizer + UBSan" && \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 $(TSAN_DIR)/asan_batch; \
	fi
