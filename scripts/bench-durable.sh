#!/usr/bin/env bash
# Issue 19's targets (BENCHMARKS.md, "Durable groups"): huddle's durable
# storage against NATS JetStream's file storage and against huddle's own
# --storage memory, in one run on this machine, in ABBA order (anchors,
# huddle, huddle, anchors) so that a change of load shows as a spread.
#
#   scripts/bench-durable.sh            # writes bin/bench-durable.txt
#   DUR=5s ROUNDS=2 scripts/bench-durable.sh
#
# All traffic stays on 127.0.0.1; huddle bench starts its own daemons with
# mDNS off, and the anchors start theirs as child processes. Each round
# fills three groups of 1,000,000 messages (fetch twice, recovery once) and
# JetStream one; about 4 minutes a round.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
DUR=${DUR:-5s}
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-bin/bench-durable.txt}
ANCHORS_DIR=${ANCHORS_DIR:-../shared/anchors}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

$GO build -o bin/huddle .
(cd "$ANCHORS_DIR" && $GO build -o "$TMP/anchors" .)

anchors() {
	echo "## anchors: JetStream file storage"
	(cd "$TMP" && ./anchors bench -suites natsasync -storage file -cases 16x16 -dur "$DUR" 2>/dev/null) | grep -E '^jetstream' || true
	(cd "$TMP" && ./anchors bench -suites nats,natsasync -sync always -cases 16x16 -dur "$DUR" 2>/dev/null) | grep -E '^jetstream' || true
	(cd "$TMP" && ./anchors bench -suites recovery -since-n 1000000 -dur "$DUR" 2>/dev/null) | grep -E '^jetstream' || true
}
huddle() {
	echo "## huddle bench"
	run() {
		echo "\$ huddle bench $*"
		./bin/huddle bench "$@" --json 2>/dev/null || echo "(failed)"
	}
	run send-batched --conns 16 --inflight 16 --duration "$DUR"
	run send-batched --conns 16 --inflight 16 --duration "$DUR" --storage memory
	run send-batched --conns 16 --inflight 16 --duration "$DUR" --fsync always
	run send --conns 16 --inflight 16 --duration "$DUR" --fsync always
	run fetch --messages 1000000 --duration "$DUR"
	run fetch --messages 1000000 --duration "$DUR" --storage memory
	run recovery --messages 1000000
}
{
	echo "# issue 19 targets, $(date -u +%FT%TZ)"
	echo "# $(nproc) cores (shared with other work), $($GO version | cut -d' ' -f3-), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
	for r in $(seq "$ROUNDS"); do
		echo
		echo "# round $r, load $(cut -d' ' -f1-3 /proc/loadavg)"
		if [ $((r % 2)) = 1 ]; then anchors; huddle; else huddle; anchors; fi
	done
	echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT"
