"""Add `--hash=sha256:...` to every line of a pip lock, from a pip installation report.

Usage: python scripts/hash_lock.py LOCK REPORT_JSON. The report comes from
`pip install --dry-run --ignore-installed --no-deps --report REPORT -r LOCK`: for each distribution pip
would install it records the archive's sha256 (from the index, or computed for a wheel on this disk).
`make setup` then installs with --require-hashes, so a swapped wheel is refused.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock: Path, report: Path) -> None:
    hashes = {canonical(item["metadata"]["name"]): item["download_info"]["archive_info"]["hashes"]["sha256"]
              for item in json.loads(report.read_text())["install"]}
    out, missing = [], []
    for line in lock.read_text().splitlines():
        requirement = line.split("\\")[0].strip()
        if not requirement or requirement.startswith(("#", "--hash")):
            if requirement.startswith("#") or not requirement:
                out.append(line)
            continue
        name = canonical(requirement.split("==")[0])
        if name not in hashes:
            missing.append(name)
            continue
        out.append(f"{requirement} \\\n    --hash=sha256:{hashes[name]}")
    if missing:
        sys.exit(f"no hash in the report for: {', '.join(missing)}")
    lock.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
