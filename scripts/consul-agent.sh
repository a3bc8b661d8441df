#!/usr/bin/env bash
# Prints the path of a Consul v1.14.11 binary, building it first when it is
# missing. Consul 1.15 and later are not usable here (licence, refused
# modules); v1.14.11 is MPL-2.0 and builds from the Go module proxy in about
# four minutes, in a separate tiny module so the project's go.mod never sees
# Consul's dependency tree. The binary is cached outside the repository:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/millrace/consul-1.14.11/consul
# Override the location with MILLRACE_CONSUL_DIR. Progress goes to stderr,
# the path alone to stdout, so callers can do: bin=$(scripts/consul-agent.sh)
set -euo pipefail

version=1.14.11
dir=${MILLRACE_CONSUL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/millrace/consul-$version}
bin=$dir/consul

if [[ -x $bin ]]; then
	echo "$bin"
	exit 0
fi

echo "consul-agent: building Consul v$version into $dir (about 4 minutes, once)" >&2
mkdir -p "$dir"
src=$(mktemp -d "$dir/build.XXXXXX")
trap 'rm -rf "$src"' EXIT

cat >"$src/go.mod" <<MOD
module consulbuild

go 1.20

require github.com/hashicorp/consul v$version

replace launchpad.net/gocheck => github.com/go-check/check v0.0.0-20140225173054-eb6ee6f84d0a
MOD
cat >"$src/tools.go" <<'GO'
//go:build tools

package consulbuild

import _ "github.com/hashicorp/consul"
GO

(
	cd "$src"
	# GOFLAGS from the caller (e.g. -mod=vendor) must not leak into this module.
	export GOFLAGS=-mod=mod GOWORK=off
	go mod tidy >&2
	go build -trimpath -o "$src/consul" github.com/hashicorp/consul >&2
)
# Rename into place so a half-written binary is never found by the -x test.
mv "$src/consul" "$bin"
echo "consul-agent: built $bin" >&2
echo "$bin"
