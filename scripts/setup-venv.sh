#!/usr/bin/env bash
# Build (or reuse) the Python 3.11 environment described by requirements/main.lock.
#
# Environments live outside the clone, keyed by the lock's hash, so a fresh clone or a CI run
# reuses the one built before and a changed lock builds a new one. `.venv` links to it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
lock="$root/requirements/main.lock"
python=${RELAY_PYTHON:-python3.11}
cache=${RELAY_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/relay/venvs}

key=$({ cat "$lock"; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
venv="$cache/main-$key"

mkdir -p "$cache"
exec 9>"$cache/.main.lock"
flock 9  # two clones setting up at once must not build the same venv twice

if [ ! -f "$venv/.relay-complete" ]; then
  echo "setup: building $venv from requirements/main.lock (a few minutes, once per lock)"
  rm -rf "$venv"  # a half-built venv from an interrupted run
  "$python" -m venv "$venv"
  # pip prints one warning per package for the machine's unused file:// indexes; hide only those.
  "$venv/bin/pip" install --no-deps --disable-pip-version-check -r "$lock" 2>&1 \
    | { grep -v "^WARNING: Location 'file://" || true; }
  "$venv/bin/pip" check
  touch "$venv/.relay-complete"
fi

ln -sfn "$venv" "$root/.venv"
echo "setup: .venv -> $venv"
