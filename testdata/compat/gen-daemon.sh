#!/bin/sh
# gen-daemon.sh HUDDLE OUT: write the single-daemon fixture with the huddle binary HUDDLE (built at the
# commit the fixture is of) into OUT/daemon.tar.gz, and what that daemon served into OUT/expect/.
# Loopback only, mDNS off. Ports 47373-47374 must be free.
set -eu
huddle=$1
out=$2
work=$(mktemp -d)
trap 'kill $spid $rpid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/registry" "$work/daemon" "$work/alice" "$work/bob" "$out/expect"
printf 'open sesame\n' > "$work/secret"
export HUDDLE_REGISTRY=127.0.0.1:47373
$huddle registry --listen 127.0.0.1:47373 --no-mdns --state-dir "$work/registry" 2>"$work/registry.log" & rpid=$!
# --max-msgs 800: a segment holds 100 messages (an eighth), so lobby's 900 span nine segments and the
# oldest 100 are past retention.
$huddle serve --listen 127.0.0.1:47374 --registry 127.0.0.1:47373 --no-mdns --state-dir "$work/daemon" \
	--group lobby --group secret --secret-file "secret=$work/secret" --max-msgs 800 2>"$work/daemon.log" & spid=$!
as() { who=$1; shift; HUDDLE_HOME="$work/$who" $huddle "$@"; }
for i in $(seq 1 50); do as alice groups 2>/dev/null | grep -q secret && break; sleep 0.2; done
as alice join lobby --as alice
as bob join lobby --as bob
as alice join secret --as alice --secret-file "$work/secret"
# lobby: single sends from each, then batches (records of many messages), a name change, a body that is
# not ASCII.
for i in $(seq 1 10); do as alice send lobby "alice says $i"; as bob send lobby "bob says $i"; done
seq 1 440 | sed 's/^/batched line /' | as alice send lobby
as bob join lobby --as robert
seq 1 439 | sed 's/^/robert line /' | as bob send lobby
as alice send lobby 'héllo wörld ✓ 日本'
seq 1 30 | sed 's/^/secret /' | as alice send secret
for g in lobby secret; do as alice fetch "$g" --json --after 0 --limit 10000 > "$out/expect/$g.jsonl"; done
for g in lobby secret; do as alice members "$g" --json > "$out/expect/members-$g.jsonl"; done
as alice groups --json > "$out/expect/groups.jsonl"
for g in lobby secret; do as alice info "$g" --json > "$out/expect/info-$g.json"; done
kill $spid $rpid; wait $spid $rpid || true
rm -f "$work/daemon/lock" "$work/registry/lock"
cp "$work/alice/key.pem" "$work/alice-key.pem"; cp "$work/bob/key.pem" "$work/bob-key.pem"
as alice id > "$out/expect/alice.id"; as bob id > "$out/expect/bob.id"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work" -cf - \
	daemon registry alice-key.pem bob-key.pem | gzip -n -9 > "$out/daemon.tar.gz"
