"""Hardware and environment fingerprint recorded with every result, and peak-memory readings."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from importlib import metadata
from typing import Any

# Packages whose versions can change numbers; recorded when installed.
TRACKED_PACKAGES = ("numpy", "scipy", "soundfile", "soxr", "torch", "ctranslate2", "faster-whisper",
                    "resemblyzer", "speechmos", "onnxruntime", "distillmos", "pesq", "pystoi",
                    "transformers")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB. On Linux, VmHWM: the peak of the process's
    own address space. getrusage's ru_maxrss survives exec, so a worker started by fork and exec
    (multiprocessing's spawn) would report its parent's size as its own peak (measured: a 28-MB
    child of a 328-MB parent read 328 MB; workers of a 1-GB `bench tts-compare` read 803-1,051 MB)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / 1024.0 if sys.platform != "darwin" else kb / (1024.0 * 1024.0)


def _cpuinfo_value(*keys: str) -> str | None:
    """The value of the first /proc/cpuinfo line that starts with one of `keys` (None off Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(keys):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo_value("model name") or platform.processor() or "unknown"


# Instruction sets that pick different numeric kernels: CTranslate2's int8 Whisper and torch's bf16
# differ between an AVX2 and an AVX-512 CPU (measured: Flite's WER on librivox-mini 27.6 % on an
# AVX-512 VNNI EPYC, 19.1 % on an AVX2 one, the same audio), and both CPUs call themselves "AMD EPYC".
KERNEL_FLAGS = ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                "asimd", "sve")


def cpu_flags() -> list[str]:
    present = set((_cpuinfo_value("flags", "Features") or "").split())  # x86 and Arm spellings
    return [flag for flag in KERNEL_FLAGS if flag in present]


def _total_ram_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of these packages; those not installed are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def fingerprint() -> dict[str, Any]:
    versions = package_versions(TRACKED_PACKAGES)
    return {
        "cpu": _cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gb": _total_ram_gb(),
        "gpus": _gpus(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "packages": versions,
    }


def training_environment() -> dict[str, Any]:
    """What a trained checkpoint's float sums depend on besides its recipe, recorded beside it: a
    rebuild that differs points at these first."""
    return {"python": platform.python_version(), **package_versions(("torch", "numpy")), "cpu": _cpu_model(),
            "cpu_flags": cpu_flags()}


def source_commit() -> str | None:
    """The git commit the harness runs from ('+dirty' with uncommitted changes to tracked files),
    or None outside a git checkout. Recorded in every summary so a result can be traced to code."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance() -> dict[str, Any]:
    """What ran and where, for results that are opened again much later: harness version and git
    commit, the machine's fingerprint, and when."""
    import time

    from bench import __version__

    return {"harness_version": __version__, "harness_commit": source_commit(), "environment": fingerprint(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
