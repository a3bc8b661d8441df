#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, once:
# kcat (librdkafka), a Kafka client we did not write, for interop tests;
# promtool (Debian package prometheus), which lints the /metrics exposition;
# a Consul v1.14.11 agent, built from the Go module proxy and cached outside
# the repository (scripts/consul-agent.sh), for the discovery and leader tests.
set -euo pipefail

need_apt=()
command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)

if ((${#need_apt[@]})); then
	echo "test-deps: installing ${need_apt[*]} from Debian" >&2
	sudo_cmd=()
	[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
	"${sudo_cmd[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Consul: built once (about 4 minutes), then found in the cache.
"$(dirname "$0")/consul-agent.sh" >/dev/null
