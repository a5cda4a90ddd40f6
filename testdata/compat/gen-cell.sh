#!/bin/sh
# gen-cell.sh WORKTREE OUT: write the cell fixture with huddle as of the checkout WORKTREE (a scratch
# worktree of the commit the fixture is of) into OUT/cell.tar.gz, and what the cell served into OUT/expect/.
# The binary is built with raft's snapshot threshold lowered to 64 entries, checked every second, and 32
# entries kept behind a snapshot (cell/node.go's defaults; the flags do not reach them), so that each member
# takes a snapshot after a hundred sends; nothing that is written changes. Loopback only, mDNS off;
# 127.0.0.1:27390 and port 27391 of 127.0.0.21-23 must be free (members sit at addresses of their own, which
# their raft configuration records, so that the tests, which must start them there, meet no other test).
set -eu
tree=$1
out=$(realpath -m "$2")
work=$(mktemp -d)
pids=
trap 'kill $pids 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
sed -i -E -e 's/(DefaultSnapshotThreshold *= ).*/\164/' -e 's/(DefaultSnapshotInterval *= ).*/\1time.Second/' \
	-e 's/(DefaultTrailingLogs *= ).*/\132/' "$tree/cell/node.go"
(cd "$tree" && go build -o "$work/huddle" .)
git -C "$tree" checkout cell/node.go
huddle=$work/huddle
mkdir -p "$work/registry" "$work/alice" "$work/bob" "$out/expect"
export HUDDLE_REGISTRY=127.0.0.1:27390
as() { who=$1; shift; HUDDLE_HOME="$work/$who" $huddle "$@"; }
peers=
: > "$out/expect/peers"
for i in 1 2 3; do
	mkdir -p "$work/m$i"
	fp=$(HUDDLE_HOME="$work/m$i" $huddle id)
	peers="$peers --cell-peer $fp@127.0.0.2$i:27391"
	echo "$fp@127.0.0.2$i:27391" >> "$out/expect/peers"
done
$huddle registry --listen 127.0.0.1:27390 --no-mdns --state-dir "$work/registry" 2>"$work/registry.log" & pids="$pids $!"
for i in 1 2 3; do
	$huddle serve --listen 127.0.0.2$i:27391 --registry 127.0.0.1:27390 --no-mdns --state-dir "$work/m$i" \
		--group lobby $peers 2>"$work/m$i.log" & pids="$pids $!"
done
for i in $(seq 1 100); do as alice groups 2>/dev/null | grep -q lobby && break; sleep 0.2; done
as alice join lobby --as alice
as bob join lobby --as bob
# One raft entry each: past the snapshot threshold.
for i in $(seq 1 40); do as alice send lobby "alice says $i" >/dev/null; as bob send lobby "bob says $i" >/dev/null; done
seq 1 200 | sed 's/^/batched line /' | as alice send lobby >/dev/null
for i in $(seq 1 150); do
	n=$(ls -d "$work"/m*/cell/snapshots/*/ 2>/dev/null | wc -l)
	[ "$n" -ge 3 ] && break
	sleep 0.2
done
[ "$n" -ge 3 ] || { echo "no snapshot on every member" >&2; exit 1; }
# Entries after the snapshot, in raft's log only.
for i in $(seq 1 5); do as bob send lobby "after the snapshot $i" >/dev/null; done
as alice fetch lobby --json --after 0 --limit 10000 > "$out/expect/lobby.jsonl"
as alice members lobby --json > "$out/expect/members-lobby.jsonl"
as alice info lobby --json > "$out/expect/info-lobby.json"
as alice groups --json > "$out/expect/groups.jsonl"
# A member's group log may lag its raft log by an interval: every member has applied everything once the
# leader has; SIGTERM makes each sync.
sleep 2
kill $pids; wait $pids || true; pids=
rm -f "$work"/m*/lock "$work"/registry/lock
cp "$work/alice/key.pem" "$work/alice-key.pem"; cp "$work/bob/key.pem" "$work/bob-key.pem"
as alice id > "$out/expect/alice.id"; as bob id > "$out/expect/bob.id"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work" -cf - m1 m2 m3 registry alice-key.pem bob-key.pem |
	gzip -n -9 > "$out/cell.tar.gz"
