#!/usr/bin/env bash
# Issue 20's targets 1 and 2 measured as CPU per message, process by
# process: a three-member huddle cell and the anchors' three-server
# JetStream cluster share the machine's cores with their loads, so the cell
# whose leader, followers and load together spend less CPU per message is
# the one that can go faster, and the split says where the difference is.
# Unlike bench-cell.sh's rates, these figures mean something on a machine
# others are using too.
#
#   scripts/cell-cpu.sh                       # both targets, huddle, JetStream, JetStream, huddle
#   PARTS=batched DUR=6 scripts/cell-cpu.sh   # target 1 only (or PARTS=send: target 2)
#   PERF=1 scripts/cell-cpu.sh                # and syscalls, context switches, page faults per 1,000 (perf stat)
#   ANCHORS=/tmp/anchors/anchors HUDDLE=/path/to/huddle scripts/cell-cpu.sh
#
# huddle: a fresh cell per scenario (registry and three `huddle serve` on
# 127.0.0.1:${PB}00-03, metrics on ${PB}21-23), `huddle bench --registry`
# 16x16 for DUR seconds after 1 s of warm-up; each member's CPU from
# /proc/<pid>/stat over DUR-1.5 s inside the window, the load's from the
# bench's json, messages per operation from the leader's counters.
# JetStream: `anchors bench -replicas 3 -cases 16x16` (natsasync: async
# publish, w256 then w4096; nats: synchronous publish); each server's CPU
# and the load's (the anchors process) over 3 s from 2.8 s after its
# three servers appear. The stream leader is the busiest server.
#
# Output, one line per run: msgs/s, leader, followers, load and total in us
# of CPU per message (BENCHMARKS.md, "Session 17, the cell's CPU per
# message process by process").
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
DUR=${DUR:-6} # at least 6: JetStream's servers are sampled from 2.8 s to 5.8 s of each case
PB=${PB:-375}
PARTS=${PARTS:-batched,send}
PERF=${PERF:-0}
ANCHORS_DIR=${ANCHORS_DIR:-../shared/anchors}
TMP=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

if [ -n "${HUDDLE:-}" ]; then
	cp "$HUDDLE" "$TMP/huddle"
else
	$GO build -o "$TMP/huddle" .
fi
if [ -n "${ANCHORS:-}" ]; then
	cp "$ANCHORS" "$TMP/anchors"
else
	(cd "$ANCHORS_DIR" && $GO build -o "$TMP/anchors" .)
fi
H=$TMP/huddle
HZ=$(getconf CLK_TCK)
PERFEV=raw_syscalls:sys_enter,syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvmmsg,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_read,syscalls:sys_enter_pwrite64,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_nanosleep,context-switches,page-faults

# ticks PID...: user+system CPU ticks of each process so far.
ticks() { for p in "$@"; do awk '{printf "%d ", $14+$15}' "/proc/$p/stat"; done; }

# perfstart NAME PID...: perf stat of each process for 3 s, into
# $TMP/perf.NAME.N; perfwait waits for them.
perfs=()
perfstart() {
	local name=$1 i=0
	shift
	[ "$PERF" = 1 ] || return 0
	for p in "$@"; do
		i=$((i + 1))
		perf stat -x, -e "$PERFEV" -p "$p" -o "$TMP/perf.$name.$i" sleep 3 &
		perfs+=($!)
	done
}
perfwait() {
	for p in "${perfs[@]}"; do wait "$p" || true; done
	perfs=()
}

# perfshow NAME MSGS LABEL...: the counts per 1,000 messages of each process.
perfshow() {
	local name=$1 msgs=$2 i=0
	shift 2
	[ "$PERF" = 1 ] || return 0
	for label in "$@"; do
		i=$((i + 1))
		awk -F, -v m="$msgs" -v l="$label" 'NF > 3 && $1 ~ /^[0-9.]+$/ {
			n = $3; sub(/.*:/, "", n); sub(/^sys_enter_/, "", n); sub(/^sys_enter$/, "syscalls", n)
			s = s sprintf(" %s=%.0f", n, $1 / m * 1000) } END { print "    " l " per 1,000:" s }' "$TMP/perf.$name.$i"
	done
}

# metric N: the leader-side counters of member N: sends answered, messages stored.
metric() {
	curl -s "http://127.0.0.1:${PB}2$1/metrics" | awk '
		/^huddle_operation_duration_seconds_count.*op="send"/ { o = $2 }
		/^huddle_messages_appended_total/ { m = $2 }
		END { printf "%d %d", o, m }'
}

# run_huddle SCENARIO: a fresh cell, one bench run of SCENARIO 16x16.
run_huddle() {
	local sc=$1 reg=127.0.0.1:${PB}00 dir=$TMP/cell.$1.$RANDOM peers=() members=() i
	mkdir -p "$dir"
	$H registry --no-mdns --listen "$reg" --state-dir "$dir/reg" --log-level warn >"$dir/reg.log" 2>&1 &
	pids+=($!)
	local rp=$!
	for i in 1 2 3; do
		mkdir -p "$dir/d$i"
		peers+=(--cell-peer "$(HUDDLE_HOME="$dir/d$i" $H id)@127.0.0.1:${PB}0$i")
	done
	for i in 1 2 3; do
		$H serve --no-mdns --registry "$reg" --listen "127.0.0.1:${PB}0$i" --advertise "127.0.0.1:${PB}0$i" \
			--group bench --state-dir "$dir/d$i" --log-level warn --send-rate 0 --max-conns-per-addr 65536 \
			--metrics "127.0.0.1:${PB}2$i" "${peers[@]}" >"$dir/d$i.log" 2>&1 &
		pids+=($!)
		members+=($!)
	done
	sleep 2
	$H bench send-batched --conns 4 --inflight 4 --registry "$reg" --duration 2s --json >/dev/null 2>&1 # elections, first connections
	$H bench "$sc" --conns 16 --inflight 16 --registry "$reg" --warmup 1s --duration "${DUR}s" --json >"$dir/out.json" 2>"$dir/err" &
	local bp=$!
	sleep 1.3
	local c0 t0 m0=() c1 t1 m1=()
	for i in 1 2 3; do m0+=("$(metric $i)"); done
	c0=$(ticks "${members[@]}")
	t0=$(date +%s.%N)
	perfstart "$sc" "${members[@]}" "$(pgrep -n -f "bench $sc --conns 16")"
	sleep "$(echo "$DUR - 1.5" | bc)"
	c1=$(ticks "${members[@]}")
	t1=$(date +%s.%N)
	for i in 1 2 3; do m1+=("$(metric $i)"); done
	wait "$bp" || true
	perfwait
	kill -9 "${members[@]}" "$rp" 2>/dev/null || true
	for i in "${members[@]}" "$rp"; do wait "$i" 2>/dev/null || true; done # their ports free for the next cell
	python3 - "$sc" "$HZ" "$c0" "$c1" "$t0" "$t1" "$dir/out.json" "${m0[*]}" "${m1[*]}" <<'PY'
import json, sys
sc, hz, c0, c1, t0, t1, out, m0, m1 = sys.argv[1:]
hz = int(hz)
dt = float(t1) - float(t0)
r = json.load(open(out))
rate = r["msgs_per_sec"]
cpu = sorted(((int(b) - int(a)) / hz * 1e6 / (rate * dt) for a, b in zip(c0.split(), c1.split())), reverse=True)
load = r["client_cpu_cores"] * 1e6 / rate
m0, m1 = [int(x) for x in m0.split()], [int(x) for x in m1.split()]
ops = max(m1[i] - m0[i] for i in range(0, 6, 2))
msgs = max(m1[i] - m0[i] for i in range(1, 6, 2))
print(f"huddle {sc:12s} {rate/1000:6.1f}k msgs/s  leader {cpu[0]:5.2f}  followers {cpu[1]:5.2f} {cpu[2]:5.2f}  "
      f"load {load:5.2f}  total {sum(cpu)+load:6.2f} us/msg  ({msgs/max(ops,1):.1f} msgs/op, p50 {r['p50_us']/1000:.1f} ms, errors {r['errors']})")
print(f"{rate*3:.0f}", file=open(out + ".msgs", "w"))  # perf counts over 3 s
PY
	perfshow "$sc" "$(cat "$dir/out.json.msgs")" member1 member2 member3 load
}

# run_jetstream SUITE: one anchors run of SUITE 16x16, each case's servers sampled.
run_jetstream() {
	local suite=$1 out=$TMP/js.$1.$RANDOM seen="" k
	(cd "$TMP" && exec ./anchors bench -replicas 3 -suites "$suite" -cases 16x16 -dur "${DUR}s" >"$out" 2>/dev/null) &
	local ap=$!
	: >"$out.cpu"
	while kill -0 "$ap" 2>/dev/null; do
		k=$(pgrep -P "$ap" | sort -n | tr '\n' ' ' || true)
		if [ "$(wc -w <<<"$k")" = 3 ] && [ "$k" != "$seen" ]; then
			# A case's three servers: sampled from 2.8 s after they
			# appear (cluster formed, stream created, warm-up done), for
			# 3 s. One line per case, empty if it ended first.
			seen=$k
			local c0="" c1="" idx
			idx=$(wc -l <"$out.cpu")
			sleep 2.8
			# shellcheck disable=SC2086 # the pids are words
			c0=$(ticks $k "$ap" 2>/dev/null || true)
			# shellcheck disable=SC2086
			perfstart "js.$suite.$idx" $k "$ap"
			sleep 3
			# shellcheck disable=SC2086
			c1=$(ticks $k "$ap" 2>/dev/null || true)
			if [ "$(wc -w <<<"$c0")" = 4 ] && [ "$(wc -w <<<"$c1")" = 4 ]; then
				echo "$c0|$c1" >>"$out.cpu"
			else
				echo >>"$out.cpu"
			fi
		fi
		sleep 0.05
	done
	wait "$ap" || true
	perfwait
	local n=0 line
	while read -r line; do
		python3 - "$HZ" "$line" "$(sed -n "$((n + 1))p" "$out.cpu")" <<'PY'
import sys
hz, line, cpu = int(sys.argv[1]), sys.argv[2].split(), sys.argv[3]
ops = float(line[3])
if not cpu:
    sys.exit(print(f"JetStream {line[0]:26s} {ops/1000:6.1f}k msgs/s  (servers not sampled)"))
c0, c1 = (x.split() for x in cpu.split("|"))
us = [(int(b) - int(a)) / hz / 3 * 1e6 / ops for a, b in zip(c0, c1)]
srv, load = sorted(us[:3], reverse=True), us[3]
print(f"JetStream {line[0]:26s} {ops/1000:6.1f}k msgs/s  leader {srv[0]:5.2f}  followers {srv[1]:5.2f} {srv[2]:5.2f}  "
      f"load {load:5.2f}  total {sum(srv)+load:6.2f} us/msg")
PY
		perfshow "js.$suite.$n" "$(awk '{print $4 * 3}' <<<"$line")" server1 server2 server3 load
		n=$((n + 1))
	done < <(grep '^jetstream' "$out")
}

echo "# huddle cell (R3) and JetStream R3, CPU per message, $(date -u +%FT%TZ), $(nproc) cores"
echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (modified)'), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
# huddle, JetStream, JetStream, huddle: both see the machine's load alike.
for who in huddle jetstream jetstream huddle; do
	for part in ${PARTS//,/ }; do
		case $who/$part in
		huddle/batched) run_huddle send-batched ;;
		huddle/send) run_huddle send ;;
		jetstream/batched) run_jetstream natsasync ;;
		jetstream/send) run_jetstream nats ;;
		*) echo "PARTS: $part? want batched, send" >&2 && exit 2 ;;
		esac
	done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
