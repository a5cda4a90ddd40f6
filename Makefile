# huddle: group messaging for local networks and servers.
#
#   make run     build and start an all-in-one registry + group daemon
#   make test    vet, gofmt, race detector over every package, brief fuzzing, end-to-end tests,
#                every benchmark run briefly
#   make bench   package benchmarks (store, wire, and the transport floor under a fetch)
#   make bench-e2e  huddle bench's scenarios beside the anchors, one run (BENCHMARKS.md)
#   make bench-durable  issue 19's targets: durable storage beside JetStream's file storage, ABBA (BENCHMARKS.md)
#   make fuzz    every fuzz target, long (FUZZTIME each, default 1m)
#   make lint    gofmt + go vet
#   make soak    a bounded load run (SOAKTIME, default 2m): memory and goroutines must stay flat
#   make crashloop  the crash loops at length: CRASHKILLS (default 500) SIGKILLs of a group daemon under load
#   make jepsen  the Jepsen-style fault schedules at length: JEPSENROUNDS (default 100) rounds of faults each
#   make bench-cell  issue 20's targets: a three-member cell beside JetStream R3, ABBA (bin/bench-cell.txt)
#   make bench-web  huddle web in chromium: open 10,000 messages, CLI to page, memory over WEBSOAK (10m)
#   make screenshots  the pictures of huddle web in docs/, from its browser tests

GO        ?= go
BIN       := bin/huddle
PKGS      := ./...
FUZZTIME  ?= 1m
BRIEFFUZZ ?= 4s
BENCHTIME ?= 1s
SOAKTIME  ?= 2m
CRASHKILLS ?= 500
JEPSENROUNDS ?= 100
WEBSOAK   ?= 10m
BENCHDUR  ?= 5s

.PHONY: all build run test vet lint unit fuzz-brief bench-smoke fuzz bench bench-e2e bench-durable bench-web screenshots e2e soak crashloop jepsen bench-cell clean

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
test: lint unit fuzz-brief bench-smoke

# make test's unit vets nothing: lint has run go vet ./..., every analyzer
# over every package and its tests, and go test's own vet before each test
# binary (a subset of those analyzers, over the same files; the -race
# build adds only e2e/race_test.go, one constant) did it again. On a cold
# build cache that was some 38 s of CPU (session 22), spent before each
# package's tests could start. make unit alone still vets as go test does.
test: UNITVET := -vet=off

# unit runs the packages whose tests take longest first (SLOWPKGS, longest
# first by their time under -race in make test), then every other one once:
# go test starts packages in the order it is given them, UNITP at a time,
# and in ./...'s order e2e, the longest, started some 160 s in on two
# cores, and the run waited for it. UNITP is one more than the two cores:
# the packages' tests mostly wait (on timers, elections, processes and a
# browser), e2e, groupd and cell using a third of a core each under -race.
# UNITTIMEOUT bounds each package's test binary: a hang still ends the
# run with every goroutine's stack, well inside CI's 90 minutes. It was
# 15m until session 22, where e2e (672 s), groupd and jepsen came within
# reach of it at load 35 and ran past it at load 40-50 with no test
# failing: the bound is for hangs, not for a slow machine.
UNITTIMEOUT ?= 25m
SLOWPKGS := ./e2e ./daemon/groupd ./internal/jepsen ./cell ./internal/faults ./cli ./discovery ./client ./internal/netlab ./internal/conformance
UNITP    ?= 3

unit:
	$(GO) test -race -count=1 -timeout $(UNITTIMEOUT) -p $(UNITP) $(UNITVET) $(if $(filter ./...,$(PKGS)),$(SLOWPKGS)) $(PKGS)

# fuzz-brief runs every native fuzz target for a few seconds each, so a
# decoder that panics on some input is caught by the ordinary test command.
fuzz-brief:
	@BRIEF=1 FUZZTIME=$(BRIEFFUZZ) GO=$(GO) ./scripts/fuzz.sh

# bench-smoke runs every benchmark once, and the batch floor for more
# streams than a connection may have open (so that stream credit must come
# back), so that benchmark code cannot rot unnoticed between bench runs.
# It runs the packages with benchmarks only (BENCHPKGS: the folders of the
# test files that declare one, found in their text as scripts/fuzz.sh finds
# fuzz targets): over ./... go test built, vetted and linked a test binary
# for each of the other 27 packages only to run nothing, some 67 s of CPU
# of make test (session 22). go vet ./... (lint) type-checks their tests
# as built without -race.
BENCHPKGS = $(sort $(dir $(shell grep -l '^func Benchmark' $$(git ls-files '*_test.go' 2>/dev/null || find . -name '*_test.go'))))

bench-smoke:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 5m $(if $(filter ./...,$(PKGS)),$(or $(addprefix ./,$(BENCHPKGS)),./...),$(PKGS))
	$(GO) test -run '^$$' -bench QUICFloorBatch -benchtime 20000x -timeout 2m ./daemon/server/

fuzz:
	@FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./store/ ./wire/
	$(GO) test -run '^$$' -bench 'QUICFloor' -benchtime 3s ./daemon/server/

# bench-e2e loads self-contained daemons on 127.0.0.1 with every huddle bench
# scenario, after the anchors (ANCHORS_DIR, default ../shared/anchors) when
# present, and writes bin/bench-e2e.txt. About 3 minutes; run on a quiet machine.
bench-e2e:
	@DUR=$(BENCHDUR) GO=$(GO) ./scripts/bench-e2e.sh

# bench-durable runs huddle bench with --storage disk, memory and --fsync
# always, its recovery scenario, and the JetStream file-storage anchors
# they are held against (ANCHORS_DIR), in ABBA order, and writes
# bin/bench-durable.txt. About 10 minutes; run on a quiet machine.
bench-durable:
	@DUR=$(BENCHDUR) GO=$(GO) ./scripts/bench-durable.sh

# bench-web runs huddle web's browser benchmarks at length (BENCHMARKS.md,
# "huddle web"): a group of 10,000 messages opened 20 times, 200 messages
# from the CLI to the page, and the page's memory over WEBSOAK of 20 msgs/s.
# It needs chromium; make test runs each of them once, briefly.
bench-web:
	$(GO) test -run '^$$' -bench 'WebOpen10k' -benchtime 20x -timeout 30m -v ./e2e/
	$(GO) test -run '^$$' -bench 'WebCLIToPage' -benchtime 200x -timeout 30m -v ./e2e/
	HUDDLE_WEB_SOAK=$(WEBSOAK) $(GO) test -run '^$$' -bench 'WebMemory' -benchtime 1x -timeout 60m -v ./e2e/

# screenshots refreshes the pictures of huddle web in docs/ (README shows
# them) from the browser tests, which take them when HUDDLE_SCREENSHOTS is set.
screenshots:
	HUDDLE_SCREENSHOTS=$(CURDIR)/docs $(GO) test -count=1 -run 'TestWeb' ./e2e/

# soak runs users joining, sending, fetching, watching and leaving against
# in-process daemons on 127.0.0.1 for SOAKTIME, printing goroutines, heap
# and throughput as it goes; it fails if either grows after warm-up or does
# not come back down once the daemons have stopped (the heap to within 4 MiB
# of where it was before).
soak:
	$(GO) run ./internal/soak -duration $(SOAKTIME)

# crashloop runs internal/faults' TestCrashLoop (sends) and
# TestCrashLoopChurn (sends, joins and leaves, retention ageing out) with
# CRASHKILLS kills each (make test runs 50 and 10): every acknowledged
# message must survive, once, in order, and every acknowledged member.
crashloop:
	HUDDLE_CRASH_KILLS=$(CRASHKILLS) HUDDLE_CHURN_KILLS=$(CRASHKILLS) $(GO) test -count=1 -run '^TestCrashLoop(Churn)?$$' -timeout 60m -v ./internal/faults/

# jepsen runs internal/jepsen's fault schedules with JEPSENROUNDS rounds of
# faults each (make test runs 6 to 12): daemons as processes on a LAN of
# network namespaces, SIGKILLed, partitioned, losing 5% of packets, their
# packets delayed, reordered and duplicated, and filling their disks under a
# recorded workload, and the history checked. Needs root, nft and iptables.
jepsen:
	HUDDLE_JEPSEN_ROUNDS=$(JEPSENROUNDS) $(GO) test -count=1 -run 'Faults$$' -timeout 90m -v ./internal/jepsen/

# bench-cell runs a three-member cell on 127.0.0.1 (three huddle serve
# processes and a registry) against the anchors' three-server JetStream
# cluster, ABBA, and fetches from a follower and from the leader: issue
# 20's targets 1, 2 and 4 (bin/bench-cell.txt). About 8 minutes.
# PARTS=fetch FETCHREPS=4 make bench-cell: target 4 alone, LFFL four times.
bench-cell:
	@DUR=$(BENCHDUR) GO=$(GO) ./scripts/bench-cell.sh

clean:
	rm -rf bin
