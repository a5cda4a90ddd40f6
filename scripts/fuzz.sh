#!/usr/bin/env bash
# Runs every native fuzz target in the module, one at a time (go test allows
# only one -fuzz target per run). FUZZTIME sets how long each one runs.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-1m}
n=0
for pkg in $($GO list ./...); do
	for target in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "fuzz $pkg $target ($FUZZTIME)"
		$GO test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" >/tmp/huddle-fuzz.$$.log 2>&1 || {
			cat /tmp/huddle-fuzz.$$.log; rm -f /tmp/huddle-fuzz.$$.log; exit 1; }
		n=$((n+1))
	done
done
rm -f /tmp/huddle-fuzz.$$.log
echo "fuzz: $n targets ran for $FUZZTIME each"
