#!/usr/bin/env bash
# Issue 20's targets, in one run on this machine: a three-member huddle cell
# (three `huddle serve` processes replicating the group "bench" over raft, a
# registry listing it) against the anchors' three-server JetStream cluster
# (`anchors bench -replicas 3`), in the order huddle, JetStream, JetStream,
# huddle (ABBA), so that both see the machine's load alike. Everything
# listens on 127.0.0.1; the three daemons, the registry and the load share
# the machine's cores (two here), as JetStream's three servers and its load
# do.
#
#   scripts/bench-cell.sh                # writes bin/bench-cell.txt
#   DUR=10s ANCHORS_DIR=/path/to/anchors scripts/bench-cell.sh
#   ANCHORS=/tmp/anchors/anchors scripts/bench-cell.sh   # an anchors binary built already
#   PARTS=fetch FETCHREPS=4 DUR=10s scripts/bench-cell.sh # target 4 alone, LFFL four times over
#
# Targets (BENCHMARKS.md, "Replicated groups"):
#   1. R3 send-batched 16x16 vs jetstream-r3-async-w4096
#   2. R3 send 16x16 (unbatched) vs jetstream-r3-sync-pub 16x16
#   4. fetch of the last 10,000 of 1,000,000 from a follower vs the leader
# (target 3, leader SIGKILL recovery, is measured by make jepsen.)
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
DUR=${DUR:-5s}
PARTS=${PARTS:-send,fetch} # send: targets 1 and 2 beside JetStream; fetch: target 4
FETCHREPS=${FETCHREPS:-1}  # how many times the fetches run leader, follower, follower, leader
OUT=${OUT:-bin/bench-cell.txt}
ANCHORS_DIR=${ANCHORS_DIR:-../shared/anchors}
REG=127.0.0.1:17373
TMP=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

$GO build -o bin/huddle .
if [[ $PARTS != *send* ]]; then
	: # no JetStream runs
elif [ -n "${ANCHORS:-}" ]; then
	cp "$ANCHORS" "$TMP/anchors" # a binary built already
else
	(cd "$ANCHORS_DIR" && $GO build -o "$TMP/anchors" .)
fi

# The cell: each member's key is made first (huddle id in its state
# directory), so that every member starts with the whole list of peers.
./bin/huddle registry --no-mdns --listen "$REG" --state-dir "$TMP/reg" --log-level warn >"$TMP/reg.log" 2>&1 &
pids+=($!)
peers=()
members=()
for i in 1 2 3; do
	mkdir -p "$TMP/d$i"
	peers+=(--cell-peer "$(HUDDLE_HOME="$TMP/d$i" ./bin/huddle id)@127.0.0.1:1740$i")
done
for i in 1 2 3; do
	./bin/huddle serve --no-mdns --registry "$REG" --listen "127.0.0.1:1740$i" --advertise "127.0.0.1:1740$i" \
		--group bench --state-dir "$TMP/d$i" --log-level warn --send-rate 0 --max-conns-per-addr 65536 \
		"${peers[@]}" >"$TMP/d$i.log" 2>&1 &
	pids+=($!)
	members+=($!)
done

# cpu prints the CPU time (user+system, ms) each member has used so far:
# the difference over a fetch run says which member did the work.
cpu() {
	local out="# cpu ms:" i=1
	for p in "${members[@]}"; do
		out+=" d$i=$(awk -v hz="$(getconf CLK_TCK)" '{print int(($14+$15)*1000/hz)}' "/proc/$p/stat")"
		i=$((i + 1))
	done
	echo "$out"
}

bench() {
	echo "\$ huddle bench $* --registry $REG --duration $DUR --json"
	./bin/huddle bench "$@" --registry "$REG" --duration "$DUR" --json
}
anchors() {
	echo "\$ anchors bench -replicas 3 $*"
	(cd "$TMP" && ./anchors bench -replicas 3 "$@" -dur "$DUR" 2>/dev/null) | sed -n '/==== SUMMARY ====/,/== info ==/p'
}

{
	echo "# huddle cell (R3) vs JetStream R3, $(date -u +%FT%TZ)"
	echo "# $(nproc) cores shared by three daemons, a registry and the load (JetStream: three servers and the load)"
	echo "# $($GO version | cut -d' ' -f3-), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
	echo
	if [[ $PARTS == *send* ]]; then
		echo "## A: huddle"
		bench send-batched --conns 16 --inflight 16
		bench send --conns 16 --inflight 16
		echo "## B: JetStream R3"
		anchors -suites natsasync,nats -cases 16x16
		echo "## B: JetStream R3, again"
		anchors -suites natsasync,nats -cases 16x16
		echo "## A: huddle, again"
		bench send-batched --conns 16 --inflight 16
		bench send --conns 16 --inflight 16
	fi
	if [[ $PARTS == *fetch* ]]; then
		echo "## fetch of the last 1% of 1,000,000 (the first run fills the group): leader, follower, follower, leader, $FETCHREPS time(s)"
		for _ in $(seq "$FETCHREPS"); do
			for r in leader follower follower leader; do
				cpu
				bench fetch --replica $r
			done
		done
		cpu
	fi
	echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT"
