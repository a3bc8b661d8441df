#!/usr/bin/env bash
# Writes the millrace instances Consul reports healthy as a Prometheus
# file_sd target list, deploy/local/.run/targets.json, with the labels
# deploy/prometheus/compose.yml gives them through Consul service discovery
# (service, role, instance). up.sh runs it once the roles are up, status.sh
# every time it runs; Prometheus reads the file again when it changes.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
run=${MILLRACE_LOCAL_DIR:-$here/.run}
consul=http://127.0.0.1:${MILLRACE_LOCAL_CONSUL_PORT:-8500}

services=$(curl -fsS "$consul/v1/catalog/services" | jq -r 'keys[] | select(startswith("millrace-"))')
for service in $services; do
	curl -fsS "$consul/v1/health/service/$service?passing"
done | jq -s '[.[][] | .Service | {
	targets: ["\(.Address):\(.Port)"],
	labels: {
		service: .Service,
		role: ([.Tags[] | select(startswith("role=")) | ltrimstr("role=")] | first // ""),
		instance: .ID
	}
}]' >"$run/targets.json.tmp"
mv "$run/targets.json.tmp" "$run/targets.json"
