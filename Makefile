# pgphi — the two commands of a new machine are `make demo` and `make test`.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go

.PHONY: all build demo test test-fips vet clean bench faults

all: build

build:
	$(GO) build -o bin/pgphi ./cmd/pgphi

# The whole story on a throwaway local PostgreSQL (installed if missing).
demo: build
	bash scripts/ensure-postgres.sh
	./bin/pgphi demo $(DEMO_FLAGS)

# Every test against a real PostgreSQL server that the tests start themselves.
test: vet
	bash scripts/ensure-postgres.sh
	-bash scripts/ensure-python.sh
	$(GO) test -count=1 -timeout 25m ./...
	$(MAKE) test-fips

# The crypto packages and a full apply under Go's FIPS 140-3 mode.
test-fips:
	GODEBUG=fips140=on $(GO) test -count=1 -timeout 20m ./envelope/ ./keys/ ./internal/engine/ ./internal/backup/

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

# Benchmarks on a throwaway cluster; records the results in BENCHMARKS.md.
bench:
	bash scripts/ensure-postgres.sh
	$(GO) run ./tools/bench -write $(BENCH_FLAGS)

# Fault campaign (kills, restarts, dropped connections, locks, a full
# disk, under a concurrent writer) on a throwaway cluster; records RELIABILITY.md.
faults:
	bash scripts/ensure-postgres.sh
	$(GO) run ./tools/faults -write $(FAULTS_FLAGS)

clean:
	rm -rf bin
