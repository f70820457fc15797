"""Training checkpoints: one safetensors file per fold, written atomically after every epoch.

A checkpoint holds nested Python state (model and optimiser state dicts, RNG
states, epoch, metric history, the best weights so far). Tensors go into the
safetensors body; everything else is JSON in the file's metadata, with
tensors, tuples, numpy arrays and non-string dict keys marked so that the
state comes back exactly as it was saved. Nothing is pickled, so a checkpoint
from elsewhere cannot run code either.

The file is written beside its final name and renamed over it
(:func:`RICENetLib.atomic.atomic_path`): a run killed at any moment, even
while saving, leaves the previous epoch's checkpoint intact. A write that
fails (disk full, file too large, no permission) is a one-line
:class:`~RICENetLib.errors.OutputError` naming the file; the previous
checkpoint stays, and a fold folder made for the first checkpoint goes again,
so no empty fold folder is left behind.

>>> save_checkpoint("fold0/checkpoint.safetensors", {"epoch": 3, "model": net.state_dict()})  # doctest: +SKIP
>>> load_checkpoint("fold0/checkpoint.safetensors")["epoch"]                                    # doctest: +SKIP
3
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from RICENetLib.atomic import atomic_path
from RICENetLib.errors import InputError

CHECKPOINT_FORMAT = "ricenet-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
_METADATA_KEY = "ricenet_checkpoint"


def _encode(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().to("cpu").contiguous()
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        tensors[path] = torch.frombuffer(bytearray(np.ascontiguousarray(value).tobytes()), dtype=torch.uint8)
        return {"__ndarray__": path, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, tensors, f"{path}.{k}") for k, v in value.items()}
        return {"__items__": [[_encode(k, tensors, f"{path}.key{i}"), _encode(v, tensors, f"{path}.{i}")]
                              for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"Cannot store {type(value).__name__} at {path} in a checkpoint.")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        raw = tensors[value["__ndarray__"]].numpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically; tensors are copied to the CPU."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "state")
    header = json.dumps({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION, "state": tree})
    path = Path(path)
    new_folder = not path.parent.exists()
    try:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={_METADATA_KEY: header})
    except BaseException:
        if new_folder:
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only if empty: nothing else was written there
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = json.loads((handle.metadata() or {})[_METADATA_KEY])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except FileNotFoundError:
        raise InputError(f"Checkpoint {path} does not exist.") from None
    except Exception as error:
        raise InputError(f"Checkpoint {path} cannot be read ({error}); delete it to restart this fold "
                         "from the beginning.") from None
    if header.get("format") != CHECKPOINT_FORMAT or header.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise InputError(f"Checkpoint {path} has an unknown format ({header.get('format')!r} version "
                         f"{header.get('format_version')!r}).")
    return _decode(header["state"], tensors)


def rng_state() -> dict[str, Any]:
    """The global random states (torch CPU and CUDA, numpy, Python) for a checkpoint."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
