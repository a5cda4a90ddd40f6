#!/usr/bin/env bash
# Runs every native fuzz target in the module, one at a time (go test allows
# only one -fuzz target per run). FUZZTIME sets how long each one runs.
#
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" when -fuzztime ends while a worker is mid-call on a loaded
# machine (go.dev/issue/75804, fixed in Go 1.27): no input is written and
# nothing reproduces. A failure of exactly that shape is run again, up to
# three runs in all; any other failure, or that one three times, fails.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-1m}
log=$(mktemp)
bins=$(mktemp -d)
trap 'rm -f "$log"; rm -rf "$bins"' EXIT

# deadline_flake says whether the log shows the coordinator's deadline race
# and nothing else: no failing input written, no panic, no test error.
deadline_flake() {
	grep -q 'context deadline exceeded' "$log" &&
		! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$log"
}

# The targets are found in the test files' text, not with go test -list,
# which builds every package's test binary only to list it (a minute and
# more of make test on 2 cores). A fuzz target is a top-level
# "func FuzzXxx(f *testing.F)" in a _test.go file of the package's folder.
#
# Each package's test binary is built once, instrumented for fuzzing as
# go test -fuzz builds it (go test -c -fuzz), and run for each of its
# targets as go test -fuzz runs it: in the package's folder (its
# testdata/fuzz seeds, and where a failing input is written), with the
# build cache's fuzz corpus for the package. go test -fuzz would link the
# binary again for every target: 1 to 2 s each, 27 times.
corpus=$($GO env GOCACHE)/fuzz
n=0
for pd in $($GO list -f '{{.ImportPath}}={{.Dir}}' ./...); do
	pkg=${pd%%=*} dir=${pd#*=}
	targets=$(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*\*testing\.F\).*/\1/p' "$dir"/*_test.go 2>/dev/null || true)
	[ -n "$targets" ] || continue
	bin="$bins/$(echo "$pkg" | tr / _).test"
	$GO test -c -fuzz . -o "$bin" "$pkg"
	for target in $targets; do
		echo "fuzz $pkg $target ($FUZZTIME)"
		for attempt in 1 2 3; do
			if (cd "$dir" && "$bin" -test.run '^$' -test.fuzz "^${target}\$" -test.fuzztime "$FUZZTIME" \
				-test.fuzzcachedir "$corpus/$pkg" -test.paniconexit0) >"$log" 2>&1; then
				break
			fi
			if [ "$attempt" -lt 3 ] && deadline_flake; then
				echo "fuzz $target: the fuzz engine's deadline race (go.dev/issue/75804), no failing input; running it again"
				continue
			fi
			cat "$log"
			exit 1
		done
		n=$((n+1))
	done
done
echo "fuzz: $n targets ran for $FUZZTIME each"
