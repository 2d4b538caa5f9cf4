# zrepl: see README.md. Every target works on a fresh machine with Go, gcc and make.
GO ?= go
FUZZTIME ?= 60s
BENCHTIME ?= 1x
PKGS ?= ./...

.PHONY: all build test fmt-check vet fuzz bench platformtest fuzz-platform generate tools run dbservers testdeps

all: build test

build:
	$(GO) build ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	$(GO) vet -tags plantedbugs ./engine/internal/plantedbugs ./engine/endpoint ./scenarios

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
	@echo "== scenarios: the long budget (ZREPL_SCENARIOS_LONG=1)"
	ZREPL_SCENARIOS_LONG=1 $(GO) test -count=1 -run='^TestScenarioLong$$' -timeout=60m ./scenarios

# Benchmarks print their own ratios against a baseline measured in the same run.
bench:
	$(GO) test -run='^$$' -bench=. -benchtime=$(BENCHTIME) -benchmem $(PKGS)

# Tests against real OpenZFS: here if this host has ZFS, else in a QEMU VM
# (cached under ~/.cache/zrepl-platformtest; see platformtest/vm/README.md).
# PLATFORMTEST_ARGS (default -test.v) goes to the test binary, e.g.
# make platformtest PLATFORMTEST_ARGS='-test.run Smoke -test.v'
platformtest:
	./platformtest/vm/run.sh

# What the tests use beyond Go, from Debian's packages: the database servers
# below, and tmux (the interactive status screen is tested in it). Tests
# that need one skip, saying so, where it is missing; .ci/run calls this
# before make test, so CI never skips.
testdeps: dbservers
	@command -v tmux >/dev/null 2>&1 && { echo "testdeps: tmux is installed"; exit 0; }; \
	echo "testdeps: installing tmux from Debian's packages"; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends tmux

# The differential test (zfsmodel against real ZFS on random histories) for
# a longer budget than CI's, on each OpenZFS line (ZREPL_PLATFORMTEST_ZFS
# picks one). The VM's timeout grows with the budget.
FUZZ_PLATFORM_MINUTES ?= 30
fuzz-platform:
	ZREPL_PLATFORMTEST_TIMEOUT=$$(( $(FUZZ_PLATFORM_MINUTES) * 60 + 900 )) \
	PLATFORMTEST_ARGS="-test.run '^TestDifferential$$' -test.v -differential.budget=$(FUZZ_PLATFORM_MINUTES)m" \
		./platformtest/vm/run.sh

# PostgreSQL and MariaDB servers from Debian's packages, for the snapshot
# hook tests: engine/hooks/dbtest starts each on a temporary data directory
# and a loopback port (tests skip, saying so, where they are missing).
# Installs only what is missing; .ci/run calls it before make test.
dbservers:
	@missing=""; \
	{ ls /usr/lib/postgresql/*/bin/initdb || command -v initdb; } >/dev/null 2>&1 || missing="$$missing postgresql"; \
	{ command -v mariadbd || ls /usr/sbin/mariadbd; } >/dev/null 2>&1 || missing="$$missing mariadb-server"; \
	if [ -z "$$missing" ]; then echo "dbservers: PostgreSQL and MariaDB are installed"; exit 0; fi; \
	echo "dbservers: installing$$missing from Debian's packages"; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing

# Code generators, pinned: protoc from Debian's protobuf-compiler, the Go
# plugins built into bin/ (git-ignored) so generated code does not depend on
# whatever happens to be on PATH.
PROTOC_GEN_GO_VERSION ?= v1.36.12
PROTOC_GEN_GO_GRPC_VERSION ?= v1.6.2
TOOLS_BIN := $(CURDIR)/bin

tools:
	@command -v protoc >/dev/null || { \
		echo "installing protoc (protobuf-compiler)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq protobuf-compiler; }
	GOBIN=$(TOOLS_BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS_BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

generate: tools
	PATH="$(TOOLS_BIN):$$PATH" protoc -I engine/rpc/pb \
		--go_out=engine/rpc/pb --go_opt=paths=source_relative \
		--go-grpc_out=engine/rpc/pb --go-grpc_opt=paths=source_relative \
		engine/rpc/pb/zrepl.proto
	$(GO) generate ./...

run:
	$(GO) run ./cmd/zrepl daemon --config examples/quickstart.yml
