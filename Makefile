# zrepl: see README.md. Every target works on a fresh machine with Go, gcc and make.
GO ?= go
FUZZTIME ?= 60s
BENCHTIME ?= 1x
PKGS ?= ./...

.PHONY: all build test fmt-check vet fuzz bench platformtest generate run

all: build test

build:
	$(GO) build ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# The README's test command: formatting, vet, every unit and property test.
test: fmt-check vet
	$(GO) test -count=1 $(PKGS)

# A bounded run of every fuzz target (FUZZTIME each).
fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
		dir=$$(dirname $$f); \
		for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/^func //'); do \
			echo "== fuzz $$dir $$t ($(FUZZTIME))"; \
			$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) $$dir; \
		done; \
	done

# Benchmarks print their own ratios against a baseline measured in the same run.
bench:
	$(GO) test -run='^$$' -bench=. -benchtime=$(BENCHTIME) -benchmem $(PKGS)

# Tests against real OpenZFS: here if this host has ZFS, else in a QEMU VM
# (cached under ~/.cache/zrepl-platformtest; see platformtest/vm/README.md).
# PLATFORMTEST_ARGS (default -test.v) goes to the test binary, e.g.
# make platformtest PLATFORMTEST_ARGS='-test.run Smoke -test.v'
platformtest:
	./platformtest/vm/run.sh

generate:
	$(GO) generate ./...

run:
	$(GO) run ./cmd/zrepl daemon --config examples/quickstart.yml
