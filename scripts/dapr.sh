#!/usr/bin/env bash
# Prints the path of a daprd v1.18.2 binary (Dapr's sidecar, Apache-2.0),
# building it first when it is missing. The benchmark harness (make bench)
# runs it as the peer of millrace's command intake: Dapr's publish API with
# its Kafka pub/sub component on the same broker.
#
# daprd builds from the Go module proxy with every component compiled in
# (-tags allcomponents) in a separate tiny module that copies the replace
# lines of dapr's own go.mod, so the project's go.mod never sees Dapr's
# dependency tree. v1.18.3 needs modules the proxy here refuses. The build
# takes 6 to 8 minutes on two cores, once; the binary (about 230 MB) is
# cached outside the repository:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/millrace/dapr-1.18.2/daprd
# Override the location with MILLRACE_DAPR_DIR. Progress goes to stderr, the
# path alone to stdout, so callers can do: bin=$(scripts/dapr.sh)
set -euo pipefail

version=1.18.2
dir=${MILLRACE_DAPR_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/millrace/dapr-$version}
bin=$dir/daprd

if [[ -x $bin ]]; then
	echo "$bin"
	exit 0
fi

echo "dapr: building daprd v$version into $dir (6 to 8 minutes, once)" >&2
mkdir -p "$dir"
src=$(mktemp -d "$dir/build.XXXXXX")
trap 'rm -rf "$src"' EXIT

# The replace lines are dapr v1.18.2's own (its go.mod): without them the
# module graph resolves to forks and commits dapr does not build with.
cat >"$src/go.mod" <<MOD
module daprbuild

go 1.26.5

require github.com/dapr/dapr v$version

replace (
	dubbo.apache.org/dubbo-go/v3 => dubbo.apache.org/dubbo-go/v3 v3.0.3-0.20230118042253-4f159a2b38f3
	gopkg.in/couchbaselabs/gocbconnstr.v1 => github.com/couchbaselabs/gocbconnstr v1.0.5
)

replace (
	github.com/chenzhuoyu/iasm => github.com/chenzhuoyu/iasm v0.9.0
	github.com/chzyer/logex => github.com/chzyer/logex v1.2.1
	github.com/gobwas/pool => github.com/gobwas/pool v0.2.1
	github.com/toolkits/concurrent => github.com/niean/gotools v0.0.0-20151221085310-ff3f51fc5c60
)
MOD
cat >"$src/tools.go" <<'GO'
//go:build tools

package daprbuild

import _ "github.com/dapr/dapr/cmd/daprd"
GO

(
	cd "$src"
	# GOFLAGS from the caller (e.g. -mod=vendor) must not leak into this module.
	export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0
	go mod tidy >&2
	# Stamp the version, which a module build would otherwise report as "edge".
	go build -trimpath -tags allcomponents \
		-ldflags "-X github.com/dapr/dapr/pkg/buildinfo.version=$version" \
		-o "$src/daprd" github.com/dapr/dapr/cmd/daprd >&2
)
# Rename into place so a half-written binary is never found by the -x test.
mv "$src/daprd" "$bin"
echo "dapr: built $bin" >&2
echo "$bin"
