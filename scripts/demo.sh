#!/usr/bin/env bash
# make demo: run the digits DAG for real through Airflow, then query the model it left served.
set -euo pipefail
cd "$(dirname "$0")/.."
relay=bin/relay
: "${RELAY_HOME:=$HOME/.relay}"; export RELAY_HOME
log="$RELAY_HOME/demo-airflow.log"
mkdir -p "$RELAY_HOME"
started=$(date +%s)

echo "==> Running the relay_digits DAG with Airflow (dag.test); log: $log"
if ! "$relay" dag-test digits >"$log" 2>&1; then
  tail -n 40 "$log"
  echo "demo: the DAG run failed; the full log is $log" >&2
  exit 1
fi
sed -n '/relay_digits:/,$p' "$log"

run_dir=$(readlink -f "$RELAY_HOME/runs/digits/latest")
image=$(.venv/bin/python - "$run_dir" <<'PY'
import json, sys
from pathlib import Path
import pandas as pd
run = Path(sys.argv[1])
manifest = pd.read_csv(run / "data" / "manifest.csv", dtype={"label": str})
root = Path(json.loads((run / "data" / "data.json").read_text())["dataset_dir"])
print(root / manifest[manifest["split"] == "test"].iloc[0]["path"])
PY
)
echo
echo "==> A held-out image ($image) through the served model:"
"$relay" predict "$image"
echo
"$relay" models digits
echo
echo "==> The served version's lineage card (data, code, spec, curves, gate, serving; renders offline):"
"$relay" report digits
port=${RELAY_V2_HTTP_PORT:-8390}
cat <<MSG

Relay is serving digits on its V2 server (MLServer, Open Inference Protocol) at http://127.0.0.1:$port
(token auth on). Query it:
  bin/relay predict $image
  curl -H "Authorization: Bearer \$(bin/relay serve key)" -T $image http://127.0.0.1:$port/predictions/digits
  (or the V2 protocol: POST http://127.0.0.1:$port/v2/models/digits/infer; gRPC on ${RELAY_V2_GRPC_PORT:-8391})
Stop it:
  bin/relay serve stop
(demo took $(( $(date +%s) - started ))s)
MSG
