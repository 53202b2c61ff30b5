#!/usr/bin/env bash
# Build (or reuse) Relay's pinned environments:
#   .venv        Python 3.11, requirements/main.lock (pip) + the tensorflow→tensorflow-cpu metapackage
#   .venv-tfx    Python 3.10, requirements/tfx.lock (uv; TFX 1.16 has no Python 3.11 wheels here)
#   .venv-tools  Python 3.11, requirements/tools.lock (uv; checkov, kubernetes-validate, selenium, kept apart)
#   .venv-serve  Python 3.11, requirements/serve.lock (uv; MLServer, the V2 server: its fastapi pin clashes)
#   .venv-kserve Python 3.11, requirements/kserve.lock (uv; kserve, only measured beside it by make bench)
# and Debian's chromium + chromedriver (the browser test) and redis-server (CeleryExecutor's broker).
# Environments live outside the clone, keyed by their lock's hash, so a fresh clone or a CI run
# reuses what was built before and a changed lock builds a new one. A completion marker makes a
# half-built environment (an interrupted run) get rebuilt.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${RELAY_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/relay/venvs}
python_main=${RELAY_PYTHON:-python3.11}
python_tfx=${RELAY_TFX_PYTHON:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")/versions/3.10.13/bin/python}
mkdir -p "$cache"
exec 9>"$cache/.setup.lock"
flock 9  # two clones setting up at once must not build the same environment twice

hide_index_noise() { grep -v "^WARNING: Location 'file://" || true; }  # the machine's unused file:// indexes

key() {  # key PYTHON FILE... : hash of the files and the interpreter version
  local python=$1; shift
  { cat "$@"; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16
}

main_venv="$cache/main-$(key "$python_main" requirements/main.lock requirements/shims/tensorflow/pyproject.toml)"
cd "$root"
if [ ! -f "$main_venv/.relay-complete" ]; then
  echo "setup: building $main_venv from requirements/main.lock (a few minutes, once per lock)"
  rm -rf "$main_venv"
  "$python_main" -m venv "$main_venv"
  # --require-hashes: every wheel must match the sha256 in the lock, so a swapped file is refused.
  "$main_venv/bin/pip" install --require-hashes --no-deps --disable-pip-version-check -r requirements/main.lock \
    2>&1 | hide_index_noise
  "$main_venv/bin/pip" install --no-deps --no-build-isolation --disable-pip-version-check \
    requirements/shims/tensorflow 2>&1 | hide_index_noise
  "$main_venv/bin/pip" check
  touch "$main_venv/.relay-complete"
fi
ln -sfn "$main_venv" "$root/.venv"

if [ ! -x "$python_tfx" ]; then
  echo "setup: Python 3.10 not found at $python_tfx (set RELAY_TFX_PYTHON); TFX validation needs it" >&2
  exit 1
fi
uv_venv() {  # uv_venv NAME PYTHON LOCK WHAT: build $cache/NAME-<key> from LOCK with uv; link .venv-NAME to it
  local name=$1 python=$2 lock=$3 what=$4 venv
  venv="$cache/$name-$(key "$python" "$lock")"
  if [ ! -f "$venv/.relay-complete" ]; then
    echo "setup: building $venv from $lock with uv ($what)"
    rm -rf "$venv"
    "$main_venv/bin/uv" venv -q --python "$python" "$venv"
    "$main_venv/bin/uv" pip sync -q --require-hashes --python "$venv/bin/python" "$lock"
    touch "$venv/.relay-complete"
  fi
  ln -sfn "$venv" "$root/.venv-$name"
}
uv_venv tfx "$python_tfx" requirements/tfx.lock "TFX 1.16; a few minutes, once per lock"
uv_venv tools "$python_main" requirements/tools.lock "checkov, kubernetes-validate, selenium"
uv_venv serve "$python_main" requirements/serve.lock "MLServer, the V2 inference server"
uv_venv kserve "$python_main" requirements/kserve.lock "kserve, measured beside MLServer by make bench"

# Debian packages: the browser test of Airflow's UI drives Debian's chromium through Debian's chromedriver
# (browser downloads by the test tools cannot work offline); CeleryExecutor's broker is Debian's redis-server.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian's ${missing[*]} with apt"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
  apt_install || { $sudo apt-get update -q >/dev/null && apt_install; } || {
    echo "setup: could not install ${missing[*]}: install them with apt, then run make setup" >&2
    exit 1
  }
fi
echo "setup: .venv -> $main_venv; .venv-tfx -> $(readlink .venv-tfx); .venv-tools -> $(readlink .venv-tools);" \
  ".venv-serve -> $(readlink .venv-serve); .venv-kserve -> $(readlink .venv-kserve)"
