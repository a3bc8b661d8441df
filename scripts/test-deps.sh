#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, once:
# kcat (librdkafka), a Kafka client we did not write, for interop tests.
set -euo pipefail

need_apt=()
command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)

if ((${#need_apt[@]})); then
	echo "test-deps: installing ${need_apt[*]} from Debian" >&2
	sudo_cmd=()
	[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
	"${sudo_cmd[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
