"""The arithmetic an occlusion map is computed in: strict float32, TF32 or float16 (issue 7).

Why a setting: a map's cost on a GPU is its convolutions, and how exact they
are is a choice with a price. cuDNN runs float32 convolutions on the tensor
cores in TF32 unless told otherwise (torch's default,
``torch.backends.cudnn.allow_tf32``): inputs and weights are rounded to 10
mantissa bits, the sums kept in float32. Strict float32 avoids that rounding,
but an H100 has no tensor cores for it and does several times fewer
operations per second. float16 rounds to the same 10 bits as TF32 and also
stores the activations in them, which halves the memory traffic and doubles
the tensor cores' rate again (what that buys a map is not yet measured on a
GPU: ``benchmarks/gpu.sh``), but its range ends at 65,504.

How far each lands from float32, on this project's trained 64³ ensemble and
preprocessed synthetic cases (``python benchmarks/occlusion_precision.py``;
TF32 emulated on the CPU by rounding the operands of every convolution as a
tensor core does): a box's drop of probability by up to 2.5e-4 (float16) and
3.7e-4 (TF32) where drops reach 0.25, or 2.8e-3 if the GPU truncates to TF32
rather than rounding (README, *Measured figures*). A map voxel averages the
drops of the boxes over it, so the maps differ by no more.

* ``"float32"``: strict; on CUDA TF32 is switched off for the map. The map
  equals brute force to float rounding (tested to 1e-4 in probability).
* ``"tf32"``: float32 tensors with TF32 tensor-core convolutions (CUDA on
  Ampere or later); matrix products stay strict (the linear head costs
  nothing; Winograd's products, off on a GPU by default, keep their float32
  error bound). Elsewhere the same as float32.
* ``"float16"``: the incremental engine in half precision (weights, cached
  maps, tiles), its global-average-pool sums in float64 and its linear head
  in float32; brute force under ``torch.autocast``. Winograd's algorithm is not
  used: its transforms multiply values by up to 8 and lose too much. For
  GPUs: a CPU without AVX-512 FP16 or AMX-FP16 emulates float16, about 100x
  slower than float32 (``ricenet predict`` warns: :mod:`RICENetLib.cpu_half_precision`).
* ``None``: by device: ``"tf32"`` on CUDA (torch's own default there, and what
  MONAI's ``OcclusionSensitivity`` gets), ``"float32"`` elsewhere.

The TF32 switches are process-wide in torch; :func:`precision_context` sets
them for the duration of one map and restores them afterwards.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

PRECISIONS = ("float32", "tf32", "float16")


def default_precision(device: torch.device | str) -> str:
    """The precision a map gets when its settings leave it open (see the module docstring)."""
    return "tf32" if torch.device(device).type == "cuda" else "float32"


def resolve_precision(precision: Optional[str], device: torch.device | str) -> str:
    """What a map on ``device`` really computes in: the default if unset; ``"tf32"`` is
    ``"float32"`` off CUDA (so that a result records the arithmetic it got)."""
    if precision is None:
        return default_precision(device)
    return "float32" if precision == "tf32" and torch.device(device).type != "cuda" else precision


def compute_dtype(precision: str, model_dtype: torch.dtype) -> torch.dtype:
    """The dtype the incremental engine holds weights and maps in (a float64 model stays float64
    unless half precision is asked for)."""
    return torch.float16 if precision == "float16" else model_dtype


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device | str) -> Iterator[None]:
    """On CUDA while the block runs: TF32 on (``"tf32"``) or off (``"float32"``) for cuDNN
    convolutions, off for cuBLAS matrix products; restored after. ``"float16"`` and other
    devices: nothing to set (the engines cast their own tensors, see :func:`brute_force_autocast`)."""
    if torch.device(device).type != "cuda" or precision == "float16":
        yield
        return
    # the two switches only (torch.backends.cudnn.flags() would also reset cuDNN's other settings)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = precision == "tf32", False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def brute_force_autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Brute force's forward passes in ``"float16"``: ``torch.autocast``'s rules (convolutions and
    linear layers in half precision); otherwise nothing changes."""
    if precision != "float16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.float16)
