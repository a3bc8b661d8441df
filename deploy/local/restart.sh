#!/usr/bin/env bash
# Starts processes of the local topology again, with the command line and
# environment up.sh started them with (deploy/local/.run/cmds/NAME). One that
# still runs is stopped first: gracefully (SIGTERM), or with --kill as a
# crash would (SIGKILL). Returns once each is ready again.
#   deploy/local/restart.sh worker-1
#   deploy/local/restart.sh --kill projector-2 gateway-1
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
run=${MILLRACE_LOCAL_DIR:-$here/.run}

signal=TERM
if [[ ${1:-} == --kill ]]; then
	signal=KILL
	shift
fi
if (($# == 0)); then
	echo "usage: deploy/local/restart.sh [--kill] NAME... (names: $(ls "$run/cmds" 2>/dev/null | tr '\n' ' '))" >&2
	exit 2
fi

for name in "$@"; do
	if [[ ! -e $run/cmds/$name ]]; then
		echo "restart: up.sh did not start $name" >&2
		exit 1
	fi
	if [[ -e $run/pids/$name.pid ]] && kill -0 "$(cat "$run/pids/$name.pid")" 2>/dev/null; then
		pid=$(cat "$run/pids/$name.pid")
		kill -"$signal" "$pid"
		for _ in $(seq 1 400); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		echo "restart: $name ($pid) stopped with SIG$signal"
	fi
	# The same command and environment, its stderr appended to the log. The
	# subshell becomes the process (exec), so that the pid is its own.
	(
		# shellcheck disable=SC1090
		source <(head -n 1 "$run/cmds/$name")
		eval "exec nohup $(tail -n 1 "$run/cmds/$name")"
	) >"$run/log/$name.out" 2>>"$run/log/$name.log" </dev/null &
	echo $! >"$run/pids/$name.pid"
	for _ in $(seq 1 600); do
		grep -q " is ready" "$run/log/$name.out" 2>/dev/null && break
		if ! kill -0 "$(cat "$run/pids/$name.pid")" 2>/dev/null; then
			echo "restart: $name exited; the end of $run/log/$name.log:" >&2
			tail -n 20 "$run/log/$name.log" >&2
			exit 1
		fi
		sleep 0.1
	done
	grep -q " is ready" "$run/log/$name.out" || {
		echo "restart: $name not ready after 60s; see $run/log/$name.log" >&2
		exit 1
	}
	echo "restart: $name ready again (pid $(cat "$run/pids/$name.pid"))"
done
