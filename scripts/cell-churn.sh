#!/usr/bin/env bash
# cell-churn.sh: how many raft elections idle and lightly loaded cells of
# three go through, at each --cell-heartbeat, on this machine as it is (or
# with HOG busy loops of our own beside them).
#
# Every cell runs at once (3 daemons each, one registry for all), so each
# heartbeat meets the same load: for each heartbeat in HEARTBEATS, one idle
# cell and one cell under `huddle bench fanout` (RATE msgs/s from one
# sender to one watcher). After DURATION it prints, per cell, the raft terms
# gained (from the first leader on), the leaders that came to lead since, and
# what raft logged since: followers whose heartbeat timeout fired, leaders that stepped
# down for want of a quorum's contact within the lease.
#
#   HEARTBEATS="300ms 500ms 1s" DURATION=600 RATE=100 HOG=2 scripts/cell-churn.sh
#
# CELLS, if set, lists the cells instead, each HEARTBEAT[/LEASE]:idle|load
# (LEASE: --cell-lease), e.g. CELLS="300ms:load 300ms/300ms:load 1s/1s:load".
#
# Ports: 127.0.0.1:29300 (registry), 294KI (daemon I of cell K),
# 296KI (its /metrics). BIN: the huddle binary (default bin/huddle).
set -euo pipefail
BIN=${BIN:-bin/huddle}
HEARTBEATS=${HEARTBEATS:-300ms 500ms 1s}
DURATION=${DURATION:-600}
RATE=${RATE:-100}
HOG=${HOG:-0}
REG=127.0.0.1:29300
TMP=$(mktemp -d)
pids=()
hogs=()
cleanup() {
	for p in "${hogs[@]}" "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

metric() { # metric PORT NAME: its value, or empty
	curl -s -m 1 "http://127.0.0.1:$1/metrics" 2>/dev/null | awk -v n="$2" '$1 == n { print $2 }'
}
term() { # term K: the highest term a member of cell K knows
	local best=0 v
	for i in 1 2 3; do
		v=$(metric "296$1$i" huddle_cell_term)
		v=${v%.*}
		[ -n "$v" ] && [ "$v" -gt "$best" ] && best=$v
	done
	echo "$best"
}
leaders() { # leaders K: how many members of cell K say they lead
	local n=0 v
	for i in 1 2 3; do
		v=$(metric "296$1$i" huddle_cell_leader)
		[ "${v%.*}" = 1 ] && n=$((n + 1))
	done
	echo "$n"
}

"$BIN" registry --no-mdns --listen "$REG" --state-dir "$TMP/reg" --log-level warn >"$TMP/reg.log" 2>&1 &
pids+=($!)
if [ -z "${CELLS:-}" ]; then
	for hb in $HEARTBEATS; do CELLS+=" $hb:idle $hb:load"; done
fi
cells=()
k=0
for spec in $CELLS; do
	hb=${spec%%:*} kind=${spec#*:}
	lease=()
	case $hb in */*) lease=(--cell-lease "${hb#*/}") hb=${hb%/*} ;; esac
	k=$((k + 1))
	cells+=("$k ${spec%%:*} $kind")
	peers=()
	for i in 1 2 3; do
		mkdir -p "$TMP/c$k/d$i"
		peers+=(--cell-peer "$(HUDDLE_HOME="$TMP/c$k/d$i" "$BIN" id)@127.0.0.1:294$k$i")
	done
	for i in 1 2 3; do
		"$BIN" serve --no-mdns --registry "$REG" --listen "127.0.0.1:294$k$i" --advertise "127.0.0.1:294$k$i" \
			--group "g$k" --state-dir "$TMP/c$k/d$i" --send-rate 0 --metrics "127.0.0.1:296$k$i" \
			--cell-heartbeat "$hb" "${lease[@]}" "${peers[@]}" >"$TMP/c$k/d$i.log" 2>&1 &
		pids+=($!)
	done
done
alive() { # every daemon and the registry still run
	for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || return 1; done
}
for c in "${cells[@]}"; do
	set -- $c
	for ((w = 0; w < 300; w++)); do
		alive || { echo "a daemon exited: see $TMP (KEEP=1 keeps it)" >&2; tail -n 2 "$TMP"/c*/d?.log >&2; exit 1; }
		[ "$(leaders "$1")" = 1 ] && break
		sleep 0.2
	done
	[ "$(leaders "$1")" = 1 ] || { echo "cell $1 elected no leader in 60 s" >&2; exit 1; }
done
for ((h = 0; h < HOG; h++)); do
	sh -c 'while :; do :; done' &
	hogs+=($!)
done
count() { # count K PATTERN: lines of cell K's logs that match
	cat "$TMP/c$1"/d?.log | grep -c "$2" || true
}
declare -A start led0 fired0 down0
for c in "${cells[@]}"; do
	set -- $c
	start[$1]=$(term "$1")
	led0[$1]=$(count "$1" 'msg="cell: leading"')
	fired0[$1]=$(count "$1" 'heartbeat timeout reached')
	down0[$1]=$(count "$1" 'failed to contact quorum of nodes, stepping down')
	if [ "$3" = load ]; then
		"$BIN" bench fanout --registry "$REG" --group "g$1" --conns 1 --rate "$RATE" --duration "${DURATION}s" \
			--json >"$TMP/c$1/bench.json" 2>"$TMP/c$1/bench.err" &
		pids+=($!)
	fi
done
began=$(date -u +%H:%M:%S)
end=$((SECONDS + DURATION))
while [ $SECONDS -lt $end ]; do
	sleep $((end - SECONDS < 30 ? end - SECONDS : 30))
	line="$(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg) terms:"
	for c in "${cells[@]}"; do
		set -- $c
		line+=" $2/$3 +$(($(term "$1") - ${start[$1]}))"
	done
	echo "$line"
done
echo "# $began..$(date -u +%H:%M:%S) UTC, ${DURATION}s, hog busy loops: $HOG, fanout $RATE msgs/s on the load cells, $(nproc) cores"
printf '%-15s %-5s %6s %8s %10s %10s %s\n' heartbeat/lease cell terms leaders hb-timeout lease-down bench
for c in "${cells[@]}"; do
	set -- $c
	led=$(($(count "$1" 'msg="cell: leading"') - ${led0[$1]}))
	fired=$(($(count "$1" 'heartbeat timeout reached') - ${fired0[$1]}))
	down=$(($(count "$1" 'failed to contact quorum of nodes, stepping down') - ${down0[$1]}))
	sent=""
	[ "$3" = load ] && sent=$(tr -d '\n' <"$TMP/c$1/bench.json" | grep -o '"ops_per_sec":[0-9.]*' | head -1 || true)
	printf '%-15s %-5s %6s %8s %10s %10s %s\n' "$2" "$3" "$(($(term "$1") - ${start[$1]}))" "$led" "$fired" "$down" "$sent"
done
