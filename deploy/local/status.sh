#!/usr/bin/env bash
# Shows what deploy/local/up.sh started: each process, whether it runs, its
# health, and the instances Consul reports healthy per service.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
run=${MILLRACE_LOCAL_DIR:-$here/.run}
consul_port=${MILLRACE_LOCAL_CONSUL_PORT:-8500}

printf '%-12s %-8s %-8s %s\n' PROCESS PID STATE HEALTH
for pidfile in "$run"/pids/*.pid; do
	[[ -e $pidfile ]] || {
		echo "nothing runs (deploy/local/up.sh starts it)"
		exit 0
	}
	name=$(basename "$pidfile" .pid)
	pid=$(cat "$pidfile")
	state=dead
	kill -0 "$pid" 2>/dev/null && state=running
	health=-
	# The HTTP address the role printed in its ready banner.
	url=$(sed -n 's/^  http  *\(http:[^ ]*\).*/\1/p' "$run/log/$name.out" 2>/dev/null | head -n 1)
	if [[ -n $url && $state == running ]]; then
		health=$(curl -s -o /dev/null -w '%{http_code}' "$url/healthz" || true)
	fi
	printf '%-12s %-8s %-8s %s\n' "$name" "$pid" "$state" "$health"
done

echo
echo "healthy in consul (127.0.0.1:$consul_port):"
for service in millrace-gateway millrace-query millrace-worker millrace-scheduler; do
	ids=$(curl -fsS "http://127.0.0.1:$consul_port/v1/health/service/$service?passing" 2>/dev/null |
		grep -o '"ID": *"'"$service"'[^"]*"' | cut -d'"' -f4 | tr '\n' ' ' || true)
	printf '  %-20s %s\n' "$service" "${ids:-none}"
done

# Keep Prometheus's targets in step with Consul (when up.sh started it).
if [[ -e $run/prometheus.yml ]] && command -v jq >/dev/null 2>&1; then
	MILLRACE_LOCAL_DIR=$run MILLRACE_LOCAL_CONSUL_PORT=$consul_port "$here/targets.sh" &&
		echo "prometheus targets: $(jq length "$run/targets.json") instances in $run/targets.json"
fi
