#!/usr/bin/env bash
# Release steps for the modules of this repository (see docs/releasing.md).
#
# The nested modules (cmd/reliablectl, ...) build against the checkout through
# `replace github.com/reliable-go/reliable => ../..`. `go install module@version`
# refuses a module whose go.mod has a replace directive, so a released nested module
# must require a published version of the root module instead:
#
#   scripts/release.sh pin VERSION [DIR...]
#       DIR's go.mod (default: cmd/reliablectl) requires github.com/reliable-go/reliable
#       at VERSION, without the replace, and is tidied (GOWORK=off). Run it once the
#       root's tag VERSION is pushed and the module proxy serves it; commit, then tag
#       DIR/VERSION.
#   scripts/release.sh unpin [DIR...]
#       Puts the replace back for development (after DIR/VERSION is pushed).
#   scripts/release.sh tags VERSION [DIR...]
#       Prints the tags of a release, in the order they are pushed.
#
# internal/modgraph's TestReliablectlInstallsWithGoInstall runs `pin` on a copy of
# the module against a local module proxy and installs reliablectl with go install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

root=github.com/reliable-go/reliable
usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}
semver() { [[ $1 =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || { echo "release.sh: $1 is not a semantic version (vX.Y.Z)" >&2; exit 2; }; }
nested() {
	local dir
	for dir in "${@:-cmd/reliablectl}"; do
		[[ -f $dir/go.mod && $dir != . ]] || { echo "release.sh: $dir is not a nested module of this repository" >&2; exit 2; }
		echo "$dir"
	done
}

cmd=${1:-}
[[ -n $cmd ]] || usage
shift
case $cmd in
pin)
	[[ $# -ge 1 ]] || usage
	version=$1
	shift
	semver "$version"
	for dir in $(nested "$@"); do
		(
			cd "$dir"
			go mod edit -dropreplace="$root" -require="$root@$version"
			GOWORK=off go mod tidy
			if grep -q '^replace\|^[[:space:]]*'"$root"' =>' go.mod; then
				echo "release.sh: $dir/go.mod still has a replace directive: go install would refuse it" >&2
				exit 1
			fi
		)
		echo "$dir requires $root $version"
	done
	;;
unpin)
	for dir in $(nested "$@"); do
		rel=$(realpath --relative-to="$dir" .)
		(cd "$dir" && go mod edit -replace="$root=$rel" && GOWORK=off go mod tidy)
		echo "$dir builds against the checkout again (replace => $rel)"
	done
	;;
tags)
	[[ $# -ge 1 ]] || usage
	version=$1
	shift
	semver "$version"
	echo "$version"
	for dir in $(nested "$@"); do echo "$dir/$version"; done
	;;
*)
	usage
	;;
esac
