#!/usr/bin/env bash
# make lock: resolve requirements/main.in with pip in a scratch venv and write requirements/main.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3.11 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install -r requirements/main.in 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
"$scratch/venv/bin/pip" check
{
  echo "# Fully pinned Python 3.11 environment, resolved from main.in by pip (see 'make lock')."
  echo "# torch is the CPU wheel on disk: pin it exactly, never a range (a range pulls a CUDA build)."
  "$scratch/venv/bin/pip" freeze --all --exclude-editable | grep -v '^pip==' | sed 's/^torch==2.13.0+cpu$/torch==2.13.0/'
} > requirements/main.lock
echo "wrote requirements/main.lock"
