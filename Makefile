# rbee-hive — build, run, test, benchmark.
GO ?= go
export PATH := $(PATH):/usr/local/go/bin

.PHONY: build run test fuzz bench clean

build:
	$(GO) build -o bin/ ./cmd/...

# Build and run the hive on its embedded defaults (loopback, default state dir).
run: build
	./bin/rbee-hive daemon

# The whole test suite, with the race detector, then a short run of every fuzz target.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...
	$(MAKE) fuzz

FUZZTIME ?= 5s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg > /tmp/rbee-fuzz.log 2>&1 || { cat /tmp/rbee-fuzz.log; exit 1; }; \
	  done; \
	done

clean:
	rm -rf bin
