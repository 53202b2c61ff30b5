"""What a measurement ran on: CPU model and the instruction-set flags that change the figures (AVX-512,
VNNI, bf16, AMX), cores, threads and library versions. Reports state it beside their numbers."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# Flags that move Relay's figures: bf16 autocast and INT8 ONNX Runtime are fast with these.
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
LIBRARIES = ("torch", "tensorflow-cpu", "keras", "onnx", "onnxruntime", "tf2onnx", "torchserve", "numpy")


def describe_machine() -> dict:
    """CPU model, relevant flags, core count, thread settings, platform and library versions."""
    model, flags = "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "(not installed)"
    return {"cpu": model, "cores": os.cpu_count(), "flags": {flag: flag in flags for flag in RELEVANT_FLAGS},
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "(unset)"), "platform": platform.platform(),
            "python": platform.python_version(), "libraries": versions}
