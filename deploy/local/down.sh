#!/usr/bin/env bash
# Stops what deploy/local/up.sh started, gracefully and in reverse order:
# Prometheus, the gateways (they stop taking requests first), the scheduler,
# the projectors and workers (they drain and flush the outbox), Consul, the
# broker last. A process that has not stopped after 40 s is killed.
#   --clean   also delete the data: the broker log, the SQLite files, the logs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
run=${MILLRACE_LOCAL_DIR:-$here/.run}

# stop NAME...: SIGTERM to each, then wait for all of them.
stop() {
	local pids=() names=()
	for name in "$@"; do
		local pidfile=$run/pids/$name.pid
		[[ -e $pidfile ]] || continue
		local pid
		pid=$(cat "$pidfile")
		if kill -TERM "$pid" 2>/dev/null; then
			pids+=("$pid")
			names+=("$name")
		fi
		rm -f "$pidfile"
	done
	for i in "${!pids[@]}"; do
		for _ in $(seq 1 400); do
			kill -0 "${pids[$i]}" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "${pids[$i]}" 2>/dev/null; then
			echo "down: ${names[$i]} did not stop within 40s; killing it" >&2
			kill -KILL "${pids[$i]}" 2>/dev/null || true
		else
			echo "down: ${names[$i]} stopped"
		fi
	done
}

stop prometheus
stop gateway-1 gateway-2
stop scheduler
stop projector-1 projector-2 worker-1 worker-2
stop consul
stop broker

if [[ ${1:-} == --clean ]]; then
	rm -rf "$run/data" "$run/log" "$run/cmds" "$run/prometheus.yml" "$run/targets.json"
	echo "down: deleted the data and logs in $run"
fi
