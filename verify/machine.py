"""What machine a measurement ran on: the CPU's model name, the ISA extensions that pick torch's
kernels, the family torch dispatches to, and any environment setting that simulates another ISA.

Exactness and speed measured on one CPU are not exactness and speed on another (an AMD EPYC and an
Intel Xeon take different MKL, oneDNN and ATen paths), so every report records this.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

# Settings that make this CPU take another ISA's kernels (or hold MKL to reproducible ones).
SIMULATION_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")
_ISA_FLAGS = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "avx2")


def _cpuinfo() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty where there is none)."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def cpu_model_name() -> str:
    """lscpu's "Model name" (the same line /proc/cpuinfo calls "model name")."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_model() -> str:
    """The model name and the ISA extensions that decide the kernels: the same VM name can land on
    another host between sessions (an AMD EPYC once, an Intel Xeon with AMX another time)."""
    flags = set(_cpuinfo().get("flags", "").split())
    isa = [f for f in _ISA_FLAGS if f in flags]
    name = cpu_model_name()
    return f"{name} ({', '.join(isa)})" if isa else name


def cpu_family() -> str:
    """Vendor and the ISA torch dispatches to (``GenuineIntel-AVX512``, ``AuthenticAMD-AVX2``):
    what picks the codec's kernels. A simulated ISA (ATEN_CPU_CAPABILITY) shows as that ISA."""
    vendor = _cpuinfo().get("vendor_id") or platform.machine()
    return f"{vendor}-{torch.backends.cpu.get_cpu_capability()}"


def simulated_isa() -> dict[str, str]:
    return {k: os.environ[k] for k in SIMULATION_ENV if k in os.environ}


def machine() -> dict[str, Any]:
    """The record every report carries."""
    return dict(cpu=cpu_model(), family=cpu_family(), simulated=simulated_isa(), cores=os.cpu_count())


def describe(m: dict[str, Any]) -> str:
    """One line for a report's header."""
    sim = ", ".join(f"{k}={v}" for k, v in m.get("simulated", {}).items())
    return f"CPU {m['cpu']}, torch dispatch {m['family']}" + (f" (simulated: {sim})" if sim else "")
