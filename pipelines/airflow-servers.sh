#!/usr/bin/env bash
# `relay airflow` (and `make airflow` in Relay's checkout): Airflow's api-server, scheduler, dag-processor and
# triggerer on 127.0.0.1, in the foreground, on SQLite. Ctrl-C (or SIGTERM) stops the processes this script
# started, by pid, and exits 0: stopping Airflow is not an error.
# RELAY_AIRFLOW_EXECUTOR=local (default): LocalExecutor, tasks run in this machine's RELAY_HOME.
# RELAY_AIRFLOW_EXECUTOR=celery: CeleryExecutor with Debian's redis-server as broker (127.0.0.1, a password) and
# RELAY_CELERY_WORKERS (2) Celery workers. Each worker is a machine of its own: its own HOME, RELAY_HOME, TMPDIR,
# AIRFLOW_HOME and copy of the project, under RELAY_WORKERS_DIR, sharing no path with the others, so runs must
# live at RELAY_RUNS_URI (S3) and models in RELAY_REGISTRY_REMOTE (git) and the DVC remote. The last worker is
# the trainer: it alone consumes the training queue (RELAY_TRAIN_QUEUE, default training), as machines with GPUs
# would, and the others Airflow's default queue (one worker consumes both).
# `relay airflow` sets RELAY_PYTHON (its interpreter: airflow lies beside it), RELAY_DAGS_FOLDER (the project's
# dags/) and RELAY_PROJECT_DIR, and RELAY_PYTHONPATH when Relay runs from a checkout.
set -euo pipefail
: "${RELAY_HOME:=$HOME/.relay}" "${RELAY_PYTHON:?run this through relay airflow}" "${RELAY_DAGS_FOLDER:?}"
: "${RELAY_PROJECT_DIR:?}"
executor=${RELAY_AIRFLOW_EXECUTOR:-local}
port=${RELAY_AIRFLOW_PORT:-8480}
export AIRFLOW_HOME=${AIRFLOW_HOME:-$RELAY_HOME/airflow}
export AIRFLOW__CORE__DAGS_FOLDER=$RELAY_DAGS_FOLDER AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-2}
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

case $executor in
  local) export AIRFLOW__CORE__EXECUTOR=LocalExecutor ;;
  celery)
    # Workers share no disk: runs, data and models go through S3 and git (make s3 starts a local S3).
    for name in RELAY_RUNS_URI RELAY_DVC_REMOTE; do
      case ${!name:-} in *://*) ;; *) echo "CeleryExecutor: set $name to a URL such as s3://bucket/path" >&2; exit 2 ;; esac
    done
    [ -n "${RELAY_REGISTRY_REMOTE:-}" ] || { echo "CeleryExecutor: set RELAY_REGISTRY_REMOTE (a git remote)" >&2; exit 2; }
    command -v redis-server >/dev/null || { echo "redis-server not found: run make setup" >&2; exit 2; }
    # Every process signs and checks the task tokens of Airflow's execution API with one secret.
    export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
    export AIRFLOW__API_AUTH__JWT_SECRET=${AIRFLOW__API_AUTH__JWT_SECRET:-$("$RELAY_PYTHON" -c 'import secrets; print(secrets.token_hex(32))')}
    export AIRFLOW__CORE__HOSTNAME_CALLABLE=pipelines.airflow_local.worker_hostname
    # Read where the DAGs are parsed: the train step and the bake-off are sent to this queue.
    export RELAY_TRAIN_QUEUE=${RELAY_TRAIN_QUEUE:-training}
    ;;
  *) echo "RELAY_AIRFLOW_EXECUTOR=$executor: use local or celery" >&2; exit 2 ;;
esac

# SQLite admits one writer at a time, and Python's sqlite3 gives up waiting for the lock after 5 s: on a slow or
# busy disk one server's write failed past Airflow's three retries, and its exit stopped all of them (the first
# Celery run on a cold machine did). Every server's writes now wait up to 60 s. Another database is left as it is.
database=${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}
if [ -z "$database" ] && [ -f "$AIRFLOW_HOME/airflow.cfg" ]; then
  database=$(sed -n 's/^sql_alchemy_conn *= *//p' "$AIRFLOW_HOME/airflow.cfg" | head -1)
fi
database=${database:-sqlite:///$AIRFLOW_HOME/airflow.db}
case $database in
  sqlite*timeout=*) ;;
  sqlite*\?*) database="$database&timeout=60" ;;
  sqlite*) database="$database?timeout=60" ;;
esac
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$database
"$airflow" db migrate >"$AIRFLOW_HOME/logs/migrate.log" 2>&1
pids=()
worker_tmps=()
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
  for tmp in "${worker_tmps[@]}"; do rm -rf "$tmp"; done
  echo "Airflow stopped."
  exit 0
}
trap stop INT TERM
trap 'for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done' EXIT
# Each in its own session: Ctrl-C reaches only this script, which stops them in order (a terminal's SIGINT
# racing their own shutdown made the stop look like a crash). Their pids are in $pid_file.
if [ "$executor" = celery ]; then
  redis_port=${RELAY_REDIS_PORT:-$("$RELAY_PYTHON" -c 'from components.settings import free_ports; print(free_ports(1)[0])')}
  redis_password=$("$RELAY_PYTHON" -c 'import secrets; print(secrets.token_hex(24))')
  mkdir -p "$AIRFLOW_HOME/redis"
  # The password goes in a config file read from stdin, not on the command line where ps shows it.
  printf 'bind 127.0.0.1\nport %s\nprotected-mode yes\nrequirepass %s\ndir %s\nsave ""\nappendonly no\n' \
    "$redis_port" "$redis_password" "$AIRFLOW_HOME/redis" \
    | setsid redis-server - >"$AIRFLOW_HOME/logs/redis.log" 2>&1 & pids+=($!)
  export AIRFLOW__CELERY__BROKER_URL=redis://:$redis_password@127.0.0.1:$redis_port/0
  export AIRFLOW__CELERY__RESULT_BACKEND=redis://:$redis_password@127.0.0.1:$redis_port/1
fi
setsid "$airflow" api-server >"$AIRFLOW_HOME/logs/api-server.log" 2>&1 & pids+=($!)
setsid "$airflow" scheduler --skip-serve-logs >"$AIRFLOW_HOME/logs/scheduler.log" 2>&1 & pids+=($!)
setsid "$airflow" dag-processor >"$AIRFLOW_HOME/logs/dag-processor.log" 2>&1 & pids+=($!)
# The scheduler's and triggerer's log servers would listen on all interfaces: logs are read from disk instead.
setsid "$airflow" triggerer --skip-serve-logs >"$AIRFLOW_HOME/logs/triggerer.log" 2>&1 & pids+=($!)
if [ "$executor" = celery ]; then
  workers_dir=${RELAY_WORKERS_DIR:-$RELAY_HOME/celery-workers}
  project=$(cd "$RELAY_PROJECT_DIR" && pwd)
  workers=${RELAY_CELERY_WORKERS:-2} default_queue=${AIRFLOW__OPERATORS__DEFAULT_QUEUE:-default}
  for n in $(seq "$workers"); do
    worker=$workers_dir/worker-$n
    if [ "$workers" = 1 ]; then queues=$default_queue,$RELAY_TRAIN_QUEUE
    elif [ "$n" = "$workers" ]; then queues=$RELAY_TRAIN_QUEUE
    else queues=$default_queue; fi
    rm -rf "$worker"
    mkdir -p "$worker/home" "$worker/relay-home" "$worker/airflow/logs" "$worker/project"
    # Its TMPDIR is short, under /tmp: multiprocessing's sockets live there, and a Unix socket's path may not
    # exceed 107 bytes.
    worker_tmp=$(mktemp -d "/tmp/relay-worker-$n.XXXXXX")
    ln -sfn "$worker_tmp" "$worker/tmp"
    worker_tmps+=("$worker_tmp")
    # The worker's checkout: the project's files as a clone of its working tree has them (git-ignored data
    # stays behind: DVC brings it), in a repository of its own.
    (cd "$project" && git ls-files -z -co --exclude-standard) \
      | (cd "$project" && tar --null -T - -cf -) | tar -xf - -C "$worker/project"
    git -C "$worker/project" init -q
    dags=$RELAY_DAGS_FOLDER
    case $dags in "$project"/*) dags=$worker/project/${dags#"$project"/} ;; esac
    pythonpath=${PYTHONPATH:-}
    case $pythonpath in "$project"*) pythonpath=$worker/project${pythonpath#"$project"} ;; esac
    # Its own model server ports (the V2 server's, TorchServe's): a worker is a machine of its own, and these
    # share one host.
    read -r v2_http v2_grpc ts_inference ts_management ts_metrics ts_grpc_inference ts_grpc_management < <(
      "$RELAY_PYTHON" -c 'from components.settings import free_ports; print(*free_ports(7))')
    # What the worker's machine has, and a shell on it: `set -a; . worker-N/relay.env` runs relay commands as the
    # worker.
    machine=("HOME=$worker/home" "RELAY_HOME=$worker/relay-home" "TMPDIR=$worker_tmp"
      "RELAY_PROJECT_DIR=$worker/project" "RELAY_V2_HTTP_PORT=$v2_http" "RELAY_V2_GRPC_PORT=$v2_grpc"
      "RELAY_TS_INFERENCE_PORT=$ts_inference" "RELAY_TS_MANAGEMENT_PORT=$ts_management"
      "RELAY_TS_METRICS_PORT=$ts_metrics" "RELAY_TS_GRPC_INFERENCE_PORT=$ts_grpc_inference"
      "RELAY_TS_GRPC_MANAGEMENT_PORT=$ts_grpc_management")
    printf '%s\n' "${machine[@]}" >"$worker/relay.env"
    # RELAY_REGISTRY unset: each worker clones the registry remote into its own RELAY_HOME. The solo pool runs
    # one task at a time in the worker's own process: prefork's children are daemons, which may not start the
    # process pools and DataLoader workers that steps use.
    AIRFLOW__CELERY__POOL=solo setsid env -u RELAY_REGISTRY "${machine[@]}" AIRFLOW_HOME="$worker/airflow" \
      AIRFLOW__CORE__DAGS_FOLDER="$dags" PYTHONPATH="$pythonpath" RELAY_WORKER_NAME="worker-$n" \
      "$airflow" celery worker --queues "$queues" --concurrency 1 --celery-hostname "worker-$n@%h" --skip-serve-logs \
      >"$AIRFLOW_HOME/logs/celery-worker-$n.log" 2>&1 & pids+=($!)
  done
fi
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
if [ "$executor" = celery ]; then
  echo "CeleryExecutor: $workers workers in $workers_dir (worker-$workers trains: queue $RELAY_TRAIN_QUEUE)," \
    "Redis on 127.0.0.1:$redis_port; runs at $RELAY_RUNS_URI"
fi
while true; do
  wait -n "${pids[@]}" || true
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "Airflow process $pid exited: see $AIRFLOW_HOME/logs" >&2; exit 1; }
  done
done
