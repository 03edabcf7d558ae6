# rbee-hive — build, run, test, benchmark.
GO ?= go
export PATH := $(PATH):/usr/local/go/bin

.PHONY: build run test test-cgroupv2 fuzz bench bench-smoke bench-bins clean

build:
	$(GO) build -o bin/ ./cmd/...

# Build and run the hive on its embedded defaults (loopback, default state dir).
run: build
	./bin/rbee-hive daemon

# The whole test suite: go vet, every test with the race detector, a short run
# of every fuzz target, a smoke run of the benchmark tool (no timing
# assertions: it only has to keep working), and the cgroup e2e tests on a pure
# cgroup v2 virtual machine.
# The tests run last, so their summary closes the output.
test:
	$(GO) vet ./...
	$(MAKE) fuzz
	@mkdir -p bin && $(MAKE) --no-print-directory bench-smoke > bin/bench-smoke.log 2>&1 || { cat bin/bench-smoke.log; exit 1; }
	@echo "bench-smoke ok (bin/bench-smoke.log)"
	$(MAKE) --no-print-directory test-cgroupv2
	$(GO) test -race -count=1 -timeout 15m ./...

# The limits, OOM, tree-kill, restart and adoption e2e tests inside a qemu VM
# whose only cgroup hierarchy is cgroup2 with memory, cpu and pids (this
# machine is hybrid; most users' are pure v2). Installs qemu-system-x86 and
# busybox-static and fetches a pinned Debian kernel when missing (needs root);
# KVM when it works, otherwise emulation; 1-2 minutes here (plus a first
# download and static build). See the script.
test-cgroupv2:
	scripts/cgroupv2-vm.sh

FUZZTIME ?= 5s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    if ! $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg > /tmp/rbee-fuzz.log 2>&1; then \
	      if grep -q 'context deadline exceeded' /tmp/rbee-fuzz.log && ! grep -q 'Failing input written' /tmp/rbee-fuzz.log; then \
	        echo "  (Go's fuzz coordinator race at the fuzztime boundary, golang/go#75804; no failing input: not a failure)"; \
	      else cat /tmp/rbee-fuzz.log; exit 1; fi; \
	    fi; \
	  done; \
	done

# The benchmark (cmd/hivebench): real daemons, real reference workers and a
# private supervisord side by side; writes bench/results.md and
# bench/results.json. The full run takes about 15 minutes; pass flags with
# BENCHFLAGS (e.g. BENCHFLAGS="--idle 20s --scale 100,1000"). It installs the
# Debian package supervisor when supervisord is missing (needs root).
bench: bench-bins
	./bin/hivebench --out bench $(BENCHFLAGS)

# Tiny N and a few trials, no timing assertions: keeps the tool working (CI).
# Writes to bin/bench-smoke so the committed results stay untouched.
bench-smoke: bench-bins
	./bin/hivebench --smoke --out bin/bench-smoke $(BENCHFLAGS)

bench-bins: build
	$(GO) build -o bin/genericworker ./internal/testutil/genericworker

clean:
	rm -rf bin
