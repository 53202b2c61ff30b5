#!/usr/bin/env bash
# `relay airflow` (and `make airflow` in Relay's checkout): Airflow's api-server, scheduler, dag-processor and
# triggerer on 127.0.0.1, in the foreground. LocalExecutor on SQLite. Ctrl-C (or SIGTERM) stops the four
# processes this script started, by pid, and exits 0: stopping Airflow is not an error.
# `relay airflow` sets RELAY_PYTHON (its interpreter: airflow lies beside it) and RELAY_DAGS_FOLDER (the
# project's dags/), and RELAY_PYTHONPATH when Relay runs from a checkout.
set -euo pipefail
: "${RELAY_HOME:=$HOME/.relay}" "${RELAY_PYTHON:?run this through relay airflow}" "${RELAY_DAGS_FOLDER:?}"
port=${RELAY_AIRFLOW_PORT:-8480}
export AIRFLOW_HOME=${AIRFLOW_HOME:-$RELAY_HOME/airflow}
export AIRFLOW__CORE__DAGS_FOLDER=$RELAY_DAGS_FOLDER AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=LocalExecutor AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-2}
export AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=$port AIRFLOW__API__BASE_URL=http://127.0.0.1:$port
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$port/execution/
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}
export PYTHONPATH=${RELAY_PYTHONPATH:-${PYTHONPATH:-}} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
airflow=$(dirname "$RELAY_PYTHON")/airflow
mkdir -p "$AIRFLOW_HOME/logs"

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "port $port (RELAY_AIRFLOW_PORT) on 127.0.0.1 is in use: set RELAY_AIRFLOW_PORT to a free port" >&2
  exit 2
fi

"$airflow" db migrate >"$AIRFLOW_HOME/logs/migrate.log" 2>&1
pids=()
pid_file=$AIRFLOW_HOME/airflow-servers.pids
alive() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
stop() {
  trap - INT TERM EXIT
  echo "Stopping Airflow..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 30); do alive || break; sleep 0.5; done
  # The scheduler's LocalExecutor can wait on its idle workers for good. Each process leads its own process
  # group (setsid below), with its workers in it: what is left goes by group.
  for pid in "${pids[@]}"; do
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -f "$pid_file"
  echo "Airflow stopped."
  exit 0
}
trap stop INT TERM
trap 'for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done' EXIT
# Each in its own session: Ctrl-C reaches only this script, which stops them in order (a terminal's SIGINT
# racing their own shutdown made the stop look like a crash). Their pids are in $pid_file.
setsid "$airflow" api-server >"$AIRFLOW_HOME/logs/api-server.log" 2>&1 & pids+=($!)
setsid "$airflow" scheduler --skip-serve-logs >"$AIRFLOW_HOME/logs/scheduler.log" 2>&1 & pids+=($!)
setsid "$airflow" dag-processor >"$AIRFLOW_HOME/logs/dag-processor.log" 2>&1 & pids+=($!)
# The scheduler's and triggerer's log servers would listen on all interfaces: logs are read from disk instead.
setsid "$airflow" triggerer --skip-serve-logs >"$AIRFLOW_HOME/logs/triggerer.log" 2>&1 & pids+=($!)
echo "${pids[*]}" >"$pid_file"

until curl -sf "http://127.0.0.1:$port/api/v2/monitor/health" >/dev/null; do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "an Airflow process exited during start-up: see $AIRFLOW_HOME/logs" >&2; exit 1; }
  done
  sleep 1
done
user=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS%%:*}
password=$("$RELAY_PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" \
  "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated" "$user" 2>/dev/null || echo "(see $AIRFLOW_HOME)")
echo "Airflow UI: http://127.0.0.1:$port  login: $user / $password"
echo "Trigger relay_<task> with its form (framework, epochs, precision, quantize, gate thresholds)."
echo "Logs: $AIRFLOW_HOME/logs. Ctrl-C stops Airflow."
while true; do
  wait -n "${pids[@]}" || true
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "Airflow process $pid exited: see $AIRFLOW_HOME/logs" >&2; exit 1; }
  done
done
