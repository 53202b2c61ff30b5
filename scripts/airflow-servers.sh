#!/usr/bin/env bash
# make airflow: Airflow's api-server, scheduler and dag-processor on 127.0.0.1, in the foreground.
# Ctrl-C stops the three processes this script started (by pid).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${RELAY_HOME:=$HOME/.relay}"
port=${RELAY_AIRFLOW_PORT:-8480}
export AIRFLOW_HOME=${AIRFLOW_HOME:-$RELAY_HOME/airflow}
export AIRFLOW__CORE__DAGS_FOLDER=$PWD/dags AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__PARALLELISM=2
export AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=$port AIRFLOW__API__BASE_URL=http://127.0.0.1:$port
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$port/execution/
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}
export PYTHONPATH=$PWD OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
airflow=.venv/bin/airflow
mkdir -p "$AIRFLOW_HOME/logs"

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "port $port (RELAY_AIRFLOW_PORT) on 127.0.0.1 is in use: set RELAY_AIRFLOW_PORT to a free port" >&2
  exit 2
fi

"$airflow" db migrate >"$AIRFLOW_HOME/logs/migrate.log" 2>&1
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
"$airflow" api-server >"$AIRFLOW_HOME/logs/api-server.log" 2>&1 & pids+=($!)
"$airflow" scheduler --skip-serve-logs >"$AIRFLOW_HOME/logs/scheduler.log" 2>&1 & pids+=($!)
"$airflow" dag-processor >"$AIRFLOW_HOME/logs/dag-processor.log" 2>&1 & pids+=($!)

echo "Airflow UI: http://127.0.0.1:$port  (user admin; password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)"
echo "Trigger relay_digits with the Params form (framework, epochs, gate thresholds). Logs: $AIRFLOW_HOME/logs. Ctrl-C stops."
wait -n "${pids[@]}"
