#!/usr/bin/env bash
# Runs every fuzz target of every module (go.work) for a short time each (FUZZTIME,
# default 10s), on top of its committed seed corpus (testdata/fuzz). CI runs
# it briefly; run it longer by hand: FUZZTIME=5m scripts/fuzz.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime=${FUZZTIME:-10s}
ran=0
for pkg in $(go list work); do # every module of go.work
	dir=$(go list -f '{{.Dir}}' "$pkg")
	grep -lq '^func Fuzz' "$dir"/*_test.go 2>/dev/null || continue
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "go test -run '^$target\$' -fuzz '^$target\$' -fuzztime $fuzztime $pkg"
		go test -run "^$target\$" -fuzz "^$target\$" -fuzztime "$fuzztime" "$pkg"
		ran=$((ran + 1))
	done
done
if [[ $ran -eq 0 ]]; then
	echo "fuzz: no fuzz target found" >&2
	exit 1
fi
echo "fuzz: $ran targets passed, $fuzztime each"
