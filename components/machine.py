"""What a measurement ran on: CPU model and the instruction-set flags that change the figures (AVX-512,
VNNI, bf16, AMX), cores, threads and library versions. Reports state it beside their numbers."""

from __future__ import annotations

import os
import platform
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path

# Flags that move Relay's figures: bf16 autocast and INT8 ONNX Runtime are fast with these.
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
LIBRARIES = ("torch", "tensorflow-cpu", "keras", "onnx", "onnxruntime", "tf2onnx", "torchserve", "numpy")


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """The CPU's model name and its flags, from /proc/cpuinfo ("unknown" and none elsewhere); read once, as
    every training asks (its precision note, Keras' XLA choice)."""
    model, flags = "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return model, frozenset(flags)


def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (as /proc/cpuinfo names them)."""
    return _cpuinfo()[1]


def cpu_has_bf16() -> bool:
    """Whether the CPU computes in bf16 natively (AVX512-BF16 or AMX-BF16); without, bf16 is emulated."""
    return bool({"avx512_bf16", "amx_bf16"} & _cpuinfo()[1])


def describe_machine() -> dict:
    """CPU model, relevant flags, core count, thread settings, platform and library versions."""
    model, flags = _cpuinfo()
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "(not installed)"
    return {"cpu": model, "cores": os.cpu_count(), "flags": {flag: flag in flags for flag in RELEVANT_FLAGS},
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "(unset)"), "platform": platform.platform(),
            "python": platform.python_version(), "libraries": versions}


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` and its descendants (live ones, and those it has waited for)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:  # a worker that ended between the listing and the reading
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


# Linux's busy CPU time (guest time is already inside user); idle, iowait and steal are not ours or anyone's.
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq")


class LoadMeter:
    """The machine's load while something of ours runs: the 1-minute load average at the end, the share of
    the machine's CPU that other processes used (all busy CPU time less ours), and the share the hypervisor
    stole. Read from the kernel's counters (psutil), so it costs nothing while it runs."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._started = time.perf_counter()
        self._cpu = psutil.cpu_times()

    def stop(self, own_cpu_seconds: float) -> dict[str, float]:
        """The load since this meter started; ``own_cpu_seconds``: what our own processes used meanwhile."""
        cpu, seconds = self._psutil.cpu_times(), time.perf_counter() - self._started
        capacity = seconds * (os.cpu_count() or 1)
        busy = sum(getattr(cpu, f) - getattr(self._cpu, f) for f in _BUSY_FIELDS if hasattr(cpu, f))
        steal = getattr(cpu, "steal", 0.0) - getattr(self._cpu, "steal", 0.0)
        return {"seconds": seconds, "load_average_1m": self._psutil.getloadavg()[0],
                "others_cpu_share": min(max(busy - own_cpu_seconds, 0.0) / capacity, 1.0) if capacity else 0.0,
                "steal_share": min(max(steal, 0.0) / capacity, 1.0) if capacity else 0.0}
