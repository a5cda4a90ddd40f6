#!/usr/bin/env bash
# End-to-end figures for BENCHMARKS.md: every `huddle bench` scenario, and,
# when the anchors harness is there, the references they are held against,
# back to back in one run on this machine (quote ratios from one run).
#
#   scripts/bench-e2e.sh                 # writes bin/bench-e2e.txt
#   DUR=10s ANCHORS_DIR=/path/to/anchors scripts/bench-e2e.sh
#
# All traffic stays on 127.0.0.1; huddle bench starts its own daemons with
# mDNS off, and the anchors start theirs as child processes.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
DUR=${DUR:-5s}
OUT=${OUT:-bin/bench-e2e.txt}
ANCHORS_DIR=${ANCHORS_DIR:-../shared/anchors}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

$GO build -o bin/huddle .
{
	echo "# huddle end-to-end figures, $(date -u +%FT%TZ)"
	echo "# $(nproc) cores, $($GO version | cut -d' ' -f3-), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
	echo
	if [ -d "$ANCHORS_DIR" ]; then
		# Built into a temporary directory: the anchors' folder is left as is.
		(cd "$ANCHORS_DIR" && $GO build -o "$TMP/anchors" .)
		echo "## anchors ($ANCHORS_DIR)"
		(cd "$TMP" && ./anchors bench -suites quic,natsasync,since,mem -cases 1x1,16x16 -dur "$DUR" 2>/dev/null) \
			| sed -n '/==== SUMMARY ====/,/== info ==/p'
		echo
	else
		echo "## anchors: $ANCHORS_DIR not found, skipped"
	fi
	echo "## transport floors: bare quic-go with the daemon's QUIC configuration, moving a fetch's 3.4 MB (Transfer) and full 16-message batches on 16 connections (Batch)"
	$GO test -run '^$' -bench 'QUICFloor' -benchtime 3s ./daemon/server/ 2>/dev/null | grep '^Benchmark' || true
	echo
	echo "## huddle bench (self-contained: huddle up on 127.0.0.1, mDNS off)"
	run() {
		echo "\$ huddle bench $* --duration $DUR --json"
		./bin/huddle bench "$@" --duration "$DUR" --json 2>/dev/null
	}
	run send --conns 1 --inflight 1
	run send --conns 16 --inflight 16
	run send-batched --conns 16 --inflight 16
	run fetch
	run fanout --conns 100 --rate 1000
	run idle --conns 1000
	echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT"
