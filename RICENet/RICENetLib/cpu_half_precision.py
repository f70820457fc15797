"""Whether this CPU computes in float16 / bfloat16 natively, and the warning when it does not.

Why: without the instructions for them (AVX-512 FP16 or AMX-FP16 for float16,
AVX-512 BF16 or AMX-BF16 for bfloat16) PyTorch's CPU kernels emulate half
precision, and a convolution runs far slower than in float32. On an AVX2-only
AMD EPYC (one thread), the 3D ResNet-18 on a batch of four 32³ inputs took
161 s in float16 against 1.7 s in float32 (93x), and on one input under
bfloat16 autocast 108 s against 1.1 s (95x). A GPU option that quietly costs a
hundredfold on a CPU deserves a warning before the work starts.

>>> slow_half_precision_warning("float16", "cpu", flags=set())       # doctest: +ELLIPSIS
'float16 on the CPU: ...'
>>> slow_half_precision_warning("float16", "cuda") is None
True
"""

from __future__ import annotations

from pathlib import Path
from typing import AbstractSet, Optional

#: CPU flags (as Linux's /proc/cpuinfo spells them) that give native arithmetic in each dtype.
NATIVE_FLAGS: dict[str, tuple[str, ...]] = {
    "float16": ("avx512_fp16", "amx_fp16"),
    "bfloat16": ("avx512_bf16", "amx_bf16"),
}

_WHAT = {"float16": "AVX-512 FP16 or AMX-FP16", "bfloat16": "AVX-512 BF16 or AMX-BF16"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> Optional[set[str]]:
    """The first processor's flags, or ``None`` where they cannot be read (not Linux)."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def has_native(dtype: str, flags: Optional[AbstractSet[str]]) -> Optional[bool]:
    """``True``/``False`` from the flags; ``None`` when they are unknown."""
    if flags is None:
        return None
    return any(flag in flags for flag in NATIVE_FLAGS[dtype])


def slow_half_precision_warning(dtype: str, device, flags: Optional[AbstractSet[str]] | str = "read") -> Optional[str]:
    """A one-line warning when ``dtype`` (``"float16"`` or ``"bfloat16"``) would run on a CPU without
    native support for it; ``None`` on other devices or on a CPU that has it. ``flags="read"`` reads
    this machine's; pass a set to decide for another."""
    if str(device).split(":")[0] != "cpu":
        return None
    if flags == "read":
        flags = cpu_flags()
    native = has_native(dtype, flags)  # type: ignore[arg-type]
    if native:
        return None
    known = "this CPU has" if native is False else "this CPU may have"
    return (f"{dtype} on the CPU: {known} no native {dtype} arithmetic ({_WHAT[dtype]}), so PyTorch emulates it "
            f"and convolutions run far slower than in float32 (about 100x on an AVX2-only CPU); "
            f"use float32 on this machine, {dtype} on a GPU.")
