# huddle: group messaging for local networks and servers.
#
#   make run     build and start an all-in-one registry + group daemon
#   make test    vet, gofmt, race detector over every package, brief fuzzing, end-to-end tests
#   make bench   package benchmarks (store, wire)
#   make fuzz    every fuzz target, long (FUZZTIME each, default 1m)
#   make lint    gofmt + go vet

GO        ?= go
BIN       := bin/huddle
PKGS      := ./...
FUZZTIME  ?= 1m
BRIEFFUZZ ?= 4s
BENCHTIME ?= 1s

.PHONY: all build run test vet lint unit fuzz-brief fuzz bench e2e clean

all: build

build:
	$(GO) build -buildvcs=auto -o $(BIN) .

run: build
	./$(BIN) up

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

# test is what CI runs (.ci/run): everything a change must keep green.
test: lint unit fuzz-brief

unit:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

# fuzz-brief runs every native fuzz target for a few seconds each, so a
# decoder that panics on some input is caught by the ordinary test command.
fuzz-brief:
	@BRIEF=1 FUZZTIME=$(BRIEFFUZZ) GO=$(GO) ./scripts/fuzz.sh

fuzz:
	@FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./store/ ./wire/

clean:
	rm -rf bin
