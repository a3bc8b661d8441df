#!/usr/bin/env bash
# Starts the many-machines topology of millrace as processes on this machine,
# every listener on 127.0.0.1:
#   - a broker process with three Kafka-protocol brokers (millrace broker),
#   - a Consul agent (v1.14.11, built once by scripts/consul-agent.sh),
#   - two workers, two projectors and two gateways (and one scheduler when
#     the binary has the role), the workers and projectors sharing one data
#     directory (docs/adr/0005-shared-sqlite-per-role.md),
#   - Prometheus, when installed, scraping every role found in Consul.
# It prints the URLs and returns; deploy/local/down.sh stops everything,
# deploy/local/status.sh shows what runs. State, logs and pid files are in
# deploy/local/.run (MILLRACE_LOCAL_DIR), kept across restarts.
#
# Ports (override with the variables): broker 19092-19094
# (MILLRACE_LOCAL_BROKER_PORT), Consul HTTP 8500 (MILLRACE_LOCAL_CONSUL_PORT),
# gateways 8080-8081, projectors 8180-8181, workers 8280-8281, scheduler 8380
# (MILLRACE_LOCAL_HTTP_BASE shifts them all: base+0, +1, +100, ...), and
# Prometheus 9090 (MILLRACE_LOCAL_PROMETHEUS_PORT).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
run=${MILLRACE_LOCAL_DIR:-$here/.run}
broker_port=${MILLRACE_LOCAL_BROKER_PORT:-19092}
consul_port=${MILLRACE_LOCAL_CONSUL_PORT:-8500}
http_base=${MILLRACE_LOCAL_HTTP_BASE:-8080}
prometheus_port=${MILLRACE_LOCAL_PROMETHEUS_PORT:-9090}
partitions=${MILLRACE_PARTITIONS:-3}

mkdir -p "$run/bin" "$run/log" "$run/pids" "$run/cmds" "$run/data"

# Refuse to start twice: down.sh first.
for pidfile in "$run"/pids/*.pid; do
	[[ -e $pidfile ]] || continue
	if kill -0 "$(cat "$pidfile")" 2>/dev/null; then
		echo "up: $(basename "$pidfile" .pid) is running (pid $(cat "$pidfile")); run deploy/local/down.sh first" >&2
		exit 1
	fi
	rm -f "$pidfile"
done

echo "up: building millrace into $run/bin" >&2
(cd "$root" && go build -o "$run/bin/millrace" ./cmd/millrace)
bin=$run/bin/millrace
consul=$("$root/scripts/consul-agent.sh")

# start NAME COMMAND...: runs COMMAND in the background, stdout to
# log/NAME.out, stderr to log/NAME.log, its pid in pids/NAME.pid.
# The command line and environment are kept in cmds/NAME, for restart.sh.
start() {
	local name=$1
	shift
	{
		printf 'export KAFKA_BROKERS=%q CONSUL_HTTP_ADDR=%q MILLRACE_PARTITIONS=%q\n' \
			"${KAFKA_BROKERS:-}" "${CONSUL_HTTP_ADDR:-}" "$partitions"
		printf '%q ' "$@"
		echo
	} >"$run/cmds/$name"
	nohup "$@" >"$run/log/$name.out" 2>"$run/log/$name.log" </dev/null &
	echo $! >"$run/pids/$name.pid"
}

# wait_ready NAME: waits until NAME printed its ready line, or fails with
# the end of its log.
wait_ready() {
	local name=$1
	for _ in $(seq 1 600); do
		if grep -q " is ready" "$run/log/$name.out" 2>/dev/null; then
			return 0
		fi
		if ! kill -0 "$(cat "$run/pids/$name.pid")" 2>/dev/null; then
			echo "up: $name exited; the end of $run/log/$name.log:" >&2
			tail -n 20 "$run/log/$name.log" >&2
			exit 1
		fi
		sleep 0.1
	done
	echo "up: $name not ready after 60s; see $run/log/$name.log" >&2
	exit 1
}

brokers="127.0.0.1:$broker_port,127.0.0.1:$((broker_port + 1)),127.0.0.1:$((broker_port + 2))"
start broker "$bin" broker --brokers 3 --addr "127.0.0.1:$broker_port" --data-dir "$run/data/broker" --partitions "$partitions"
wait_ready broker

# A dev-mode agent: an in-memory server. It forgets registrations and keys
# when it stops; the processes register again when it is back.
start consul "$consul" agent -dev -node millrace-local -client 127.0.0.1 -bind 127.0.0.1 \
	-http-port "$consul_port" -dns-port -1 -grpc-port -1 -grpc-tls-port -1 \
	-serf-lan-port "$((consul_port + 1))" -serf-wan-port "$((consul_port + 2))" -server-port "$((consul_port + 3))"
for _ in $(seq 1 300); do
	if [[ $(curl -fsS "http://127.0.0.1:$consul_port/v1/status/leader" 2>/dev/null) == *:* ]]; then
		break
	fi
	sleep 0.1
done
curl -fsS "http://127.0.0.1:$consul_port/v1/status/leader" >/dev/null || {
	echo "up: consul did not elect a leader; see $run/log/consul.log" >&2
	exit 1
}

export KAFKA_BROKERS=$brokers
export CONSUL_HTTP_ADDR=127.0.0.1:$consul_port
export MILLRACE_PARTITIONS=$partitions
shared=$run/data/shared

roles=()
for i in 1 2; do
	start "worker-$i" "$bin" worker --data-dir "$shared" --http-addr "127.0.0.1:$((http_base + 199 + i))"
	start "projector-$i" "$bin" projector --data-dir "$shared" --http-addr "127.0.0.1:$((http_base + 99 + i))"
	roles+=("worker-$i" "projector-$i")
done
for name in "${roles[@]}"; do wait_ready "$name"; done
for i in 1 2; do
	start "gateway-$i" "$bin" gateway --http-addr "127.0.0.1:$((http_base + i - 1))"
	roles+=("gateway-$i")
done
# The scheduler role, when this binary has it (docs/scheduling.md).
if help=$("$bin" scheduler --help 2>/dev/null); then
	args=(--http-addr "127.0.0.1:$((http_base + 300))")
	[[ $help == *--data-dir* ]] && args+=(--data-dir "$run/data/scheduler")
	start scheduler "$bin" scheduler "${args[@]}"
	roles+=(scheduler)
	scheduler="http://127.0.0.1:$((http_base + 300))/admin/jobs"
fi
for name in "${roles[@]}"; do wait_ready "$name"; done

# Prometheus, when installed: every role Consul reports healthy. Debian's
# build of Prometheus lacks Consul service discovery (compose's image has
# it: deploy/prometheus/compose.yml), so targets.sh writes what Consul
# reports to a file Prometheus watches; status.sh writes it again.
prom=""
if command -v prometheus >/dev/null 2>&1 && command -v jq >/dev/null 2>&1; then
	MILLRACE_LOCAL_DIR=$run MILLRACE_LOCAL_CONSUL_PORT=$consul_port "$here/targets.sh"
	cat >"$run/prometheus.yml" <<EOF
# Written by deploy/local/up.sh: every millrace role, as Consul reports it
# (deploy/local/targets.sh).
global:
  scrape_interval: 5s
scrape_configs:
  - job_name: millrace
    file_sd_configs:
      - files: ["$run/targets.json"]
EOF
	start prometheus prometheus --config.file "$run/prometheus.yml" --storage.tsdb.path "$run/data/prometheus" \
		--web.listen-address "127.0.0.1:$prometheus_port"
	prom="http://127.0.0.1:$prometheus_port/targets"
fi

cat <<EOF
millrace local topology is up
  gateways    http://127.0.0.1:$http_base/v1/  http://127.0.0.1:$((http_base + 1))/v1/
  projectors  http://127.0.0.1:$((http_base + 100))/query/v1/  http://127.0.0.1:$((http_base + 101))/query/v1/
  workers     http://127.0.0.1:$((http_base + 200))/healthz  http://127.0.0.1:$((http_base + 201))/healthz
  scheduler   ${scheduler:-not in this binary}
  brokers     $brokers (millrace broker, data in $run/data/broker)
  consul      http://127.0.0.1:$consul_port/ui/  (CONSUL_HTTP_ADDR=127.0.0.1:$consul_port)
  prometheus  ${prom:-not installed (apt-get install prometheus)}
  data        $shared (shared by the workers and the projectors)
  logs        $run/log/
Try:
  curl -s -XPOST -H 'Content-Type: application/json' -H 'Prefer: wait=5' \\
    http://127.0.0.1:$http_base/v1/users -d '{"email":"ada@example.com","name":"Ada Lovelace"}'
Stop with deploy/local/down.sh.
EOF
