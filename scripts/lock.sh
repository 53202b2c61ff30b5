#!/usr/bin/env bash
# make lock: re-resolve both environments.
#   requirements/main.in → main.lock with pip (Python 3.11; pip takes torch's CPU wheel from the machine's disk)
#   requirements/tfx.in  → tfx.lock with uv (Python 3.10; pip backtracks for over 13 minutes on TFX)
#   requirements/{tools,serve,kserve}.in → their locks with uv (Python 3.11)
# Like pip-compile, main.lock's current pins are kept (as constraints) so that adding a dependency moves nothing
# else; `UPGRADE=1 make lock` re-resolves everything to the newest versions, and `UPGRADE_PACKAGES="a b" make lock`
# frees only those (pip-compile's --upgrade-package), e.g. to move a pin that a new requirement contradicts.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3.11 -m venv "$scratch/venv"
pip="$scratch/venv/bin/pip"
constraints=()
if [ "${UPGRADE:-0}" != 1 ] && [ -f requirements/main.lock ]; then
  # name==version lines only: pip refuses hashes in a constraints file, and torch's local +cpu build is on disk.
  grep -E '^[A-Za-z0-9_.-]+==[^ ]+' requirements/main.lock | sed 's/ *\\$//' > "$scratch/pins.txt"
  for package in ${UPGRADE_PACKAGES:-}; do
    grep -viE "^${package}==" "$scratch/pins.txt" > "$scratch/pins.kept" || true
    mv "$scratch/pins.kept" "$scratch/pins.txt"
  done
  constraints=(-c "$scratch/pins.txt")
fi
# The shim builds without isolation: it needs setuptools' bdist_wheel, which the venv's bundled setuptools lacks.
"$pip" install setuptools wheel "${constraints[@]}" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
# The metapackage first, so tensorflow-serving-api's "tensorflow" requirement resolves to tensorflow-cpu.
"$pip" install --no-build-isolation requirements/shims/tensorflow 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
"$pip" install -r requirements/main.in "${constraints[@]}" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
"$pip" check
{
  echo "# Fully pinned Python 3.11 environment, resolved from main.in by pip (see 'make lock')."
  echo "# torch is the CPU wheel on disk: pin it exactly, never a range (a range pulls a CUDA build)."
  echo "# The 'tensorflow' metapackage (requirements/shims/tensorflow) is installed beside this lock by make setup."
  "$pip" freeze --all --exclude-editable | grep -v '^pip==' | grep -v '^tensorflow @ ' \
    | sed 's/^torch==2.13.0+cpu$/torch==2.13.0/'
} > requirements/main.lock
# Each line gets the sha256 of the archive pip would install (from the index, or of the wheel on disk).
"$pip" install --dry-run --ignore-installed --no-deps --quiet --report "$scratch/report.json" -r requirements/main.lock \
  2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
"$scratch/venv/bin/python" scripts/hash_lock.py requirements/main.lock "$scratch/report.json"
# uv prefers the versions already in its output file: start from the current locks so they stay pinned too.
if [ "${UPGRADE:-0}" != 1 ]; then
  cp requirements/tfx.lock requirements/tools.lock requirements/serve.lock requirements/kserve.lock "$scratch/"
fi
"$scratch/venv/bin/uv" pip compile -q --generate-hashes requirements/tfx.in --python-version 3.10 \
  --python-platform x86_64-unknown-linux-gnu -o "$scratch/tfx.lock"
{ echo "# Fully pinned TFX environment (Python 3.10), resolved by uv from tfx.in, with hashes (see 'make lock')."; cat "$scratch/tfx.lock"; } \
  > requirements/tfx.lock
"$scratch/venv/bin/uv" pip compile -q --generate-hashes requirements/tools.in --python-version 3.11 \
  --python-platform x86_64-unknown-linux-gnu -o "$scratch/tools.lock"
{ echo "# Fully pinned tools environment (Python 3.11: checkov, kubernetes-validate, selenium), resolved by uv from tools.in, with hashes (see 'make lock')."
  cat "$scratch/tools.lock"; } > requirements/tools.lock
for name in serve kserve; do  # the V2 server (MLServer), and kserve to measure beside it (bench)
  "$scratch/venv/bin/uv" pip compile -q --generate-hashes "requirements/$name.in" --python-version 3.11 \
    --python-platform x86_64-unknown-linux-gnu -o "$scratch/$name.lock"
  { echo "# Fully pinned $name environment (Python 3.11), resolved by uv from $name.in, with hashes (see 'make lock')."
    cat "$scratch/$name.lock"; } > "requirements/$name.lock"
done
echo "wrote requirements/main.lock, tfx.lock, tools.lock, serve.lock and kserve.lock"
