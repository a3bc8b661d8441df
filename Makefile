# The two commands a newcomer needs:
#   make dev    run millrace on the embedded default (go run ./cmd/millrace dev)
#   make test   install what the tests need (once, cached) and run the whole suite
.PHONY: dev test test-deps build bench

dev:
	go run ./cmd/millrace dev

test: test-deps
	go vet ./...
	go test -count=1 -timeout 15m ./...

test-deps:
	./scripts/test-deps.sh

build:
	go build -o bin/millrace ./cmd/millrace

# The benchmarks in full mode: several minutes, plus building daprd once
# (scripts/dapr.sh, about 7 minutes, cached outside the repository). Writes
# the results into docs/benchmarks.md. The quick mode runs in `make test`
# (go test ./bench/...).
bench:
	go run ./bench/cmd/millrace-bench -out docs/benchmarks.md
