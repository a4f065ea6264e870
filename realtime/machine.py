"""What machine a measurement ran on: CPU name, usable cores and the int8-relevant feature flags.

Every measured JSON in ``docs/measurements`` names its machine through :func:`cpu_info`, so the
benchmark, the batch benchmark and the training measurements describe a CPU the same way.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# CPU features that matter for int8 inference (x86: AVX2/AVX-512 VNNI; Arm: dot product, i8mm).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_int8", "neon", "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve")
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd07": "Cortex-A57", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76"}


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """CPU name, usable cores, architecture and int8-relevant flags (from /proc/cpuinfo on Linux)."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or fields.get("hardware") or platform.processor() or platform.machine()
    if "model name" not in fields and fields.get("model"):  # Raspberry Pi: "Raspberry Pi 4 Model B Rev 1.4"
        name = fields["model"]
    part = ARM_PARTS.get(fields.get("cpu part", "").lower())
    if part and part not in name:
        name = f"{name} ({part})"
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"name": name, "cores": cores, "machine": platform.machine(),
            "flags": [f for f in CPU_FLAGS if f in flags]}


def describe_cpu(cpu: dict[str, Any]) -> str:
    """``cpu_info()``'s record in words, as the docs name a machine."""
    flags = ", ".join(cpu.get("flags", [])) or "no SIMD flags found"
    return f"{cpu.get('name', 'unknown CPU')}, {cpu.get('cores', '?')} cores ({flags})"
