"""Skull stripping: a brain mask on the MRI's own grid, from a pluggable backend.

Backends
--------
``deepbet``
    deepbet (PyPI ``deepbet``, MIT): two small TorchScript U-Nets whose weights
    ship inside the wheel, so nothing is downloaded at run time. It runs here in
    memory on a nibabel image built from the SimpleITK one (no temporary file).
    Its weights load with ``torch.jit.load``: a TorchScript archive, read by
    torch's own restricted unpickler (tensors and TorchScript classes only, no
    Python ``pickle`` of arbitrary objects). Before the first load we check both
    files against the SHA-256 digests recorded in the installed wheel.
``hd-bet``
    HD-BET ≥ 2.0 (PyPI ``hd-bet``), the paper's choice, only when the user has
    installed it and its weights (it downloads them to ``~/hd-bet_params`` on
    first use of its own command). It runs through a temporary NIfTI file.
    Note: HD-BET's nnU-Net loads its checkpoint with ``torch.load`` (a pickle).
``none``
    The image is already skull-stripped: the mask is its non-zero voxels.

>>> mask = skull_strip(postop_1mm, "deepbet", name="postop image")   # doctest: +SKIP
>>> dice(mask, truth_mask)                                           # doctest: +SKIP
0.98
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import inspect
import logging
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk

from .errors import PreprocessingError
from .progress import CancelCheck, Progress, ProgressCallback, as_progress

log = logging.getLogger(__name__)

BACKENDS = ("deepbet", "hd-bet", "none")

#: A brain mask smaller than this (ml) is a failure, not a brain.
MIN_BRAIN_ML = 100.0
#: A mask larger than this (ml) is probably a whole head: warned about.
MAX_BRAIN_ML = 2500.0

_deepbet_model: Any = None
_deepbet_lock = threading.Lock()


def backend_status() -> dict[str, Optional[str]]:
    """For each backend, ``None`` when it can run here, else why not (for the GUI and ``ricenet info``)."""
    status: dict[str, Optional[str]] = {"none": None}
    status["deepbet"] = None if importlib.util.find_spec("deepbet") else "the 'deepbet' package is not installed (pip install deepbet)"
    status["hd-bet"] = _hdbet_missing()
    return status


def skull_strip(image: sitk.Image, backend: str = "deepbet", *, name: str = "image", threshold: float = 0.5,
                progress: Optional[ProgressCallback | Progress] = None,
                cancel: Optional[CancelCheck] = None) -> sitk.Image:
    """A uint8 brain mask (1 = brain) on ``image``'s grid, by ``backend``.

    Raises :class:`PreprocessingError` naming ``name`` (and the missing piece
    for an unavailable backend) when no plausible brain mask comes out.
    """
    p = as_progress(progress, cancel)
    p(0.0, f"skull stripping ({backend})")
    if backend == "deepbet":
        mask = _deepbet(image, name, threshold)
    elif backend == "hd-bet":
        mask = _hdbet(image, name)
    elif backend == "none":
        mask = sitk.Cast(sitk.GetImageFromArray((sitk.GetArrayViewFromImage(image) > 0).astype(np.uint8)), sitk.sitkUInt8)
        mask.CopyInformation(image)
    else:
        raise PreprocessingError(f"Unknown skull-stripping backend '{backend}'; use one of {', '.join(BACKENDS)}.")
    _check_mask(mask, name, backend)
    p(1.0, "skull stripped")
    return mask


def brain_volume_ml(mask: sitk.Image) -> float:
    return float(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) * float(np.prod(mask.GetSpacing())) / 1000.0


def dice(a: sitk.Image | np.ndarray, b: sitk.Image | np.ndarray) -> float:
    """Dice overlap of two masks on the same grid (1 = identical)."""
    x = (sitk.GetArrayViewFromImage(a) if isinstance(a, sitk.Image) else np.asarray(a)) > 0
    y = (sitk.GetArrayViewFromImage(b) if isinstance(b, sitk.Image) else np.asarray(b)) > 0
    total = int(x.sum()) + int(y.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(x, y).sum()) / total


def _check_mask(mask: sitk.Image, name: str, backend: str) -> None:
    volume = brain_volume_ml(mask)
    if volume < MIN_BRAIN_ML:
        raise PreprocessingError(
            f"Skull stripping of {name} ({backend}) found {volume:.0f} ml of brain, which is not a brain; "
            "check that it is a T1-weighted MRI of the head (or choose another backend)."
        )
    if volume > MAX_BRAIN_ML:
        log.warning("Skull stripping of %s (%s) kept %.0f ml: more than a brain; is the skull still in?", name, backend, volume)


# --------------------------------------------------------------------------- deepbet


def _record_digests(distribution: str) -> dict[str, str]:
    """SHA-256 digests (hex) of a wheel's files, from its installed RECORD."""
    from importlib import metadata

    digests = {}
    for file in metadata.files(distribution) or []:
        if file.hash is not None and file.hash.mode == "sha256":
            raw = base64.urlsafe_b64decode(file.hash.value + "=" * (-len(file.hash.value) % 4))
            digests[str(file.locate().resolve())] = raw.hex()
    return digests


def _verify_weights(paths: list[Path]) -> None:
    try:
        digests = _record_digests("deepbet")
    except Exception:  # no RECORD (e.g. a source checkout): nothing to compare against
        log.warning("deepbet's install record is unavailable; its weights are used unverified.")
        return
    for path in paths:
        expected = digests.get(str(path.resolve()))
        if expected is None:
            log.warning("deepbet weight file %s is not in its install record; used unverified.", path)
            continue
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected:
            raise PreprocessingError(
                f"deepbet's weight file {path} does not match the digest recorded at installation; "
                "it was modified. Reinstall deepbet (pip install --force-reinstall deepbet)."
            )


def _deepbet_extractor() -> Any:
    global _deepbet_model
    with _deepbet_lock:
        if _deepbet_model is None:
            if importlib.util.find_spec("deepbet") is None:
                raise PreprocessingError(
                    "Skull-stripping backend 'deepbet' needs the 'deepbet' package (pip install deepbet), "
                    "or choose 'hd-bet' or 'none'."
                )
            import warnings

            from deepbet import BrainExtraction
            from deepbet.utils import DATA_PATH

            _verify_weights([Path(DATA_PATH) / "models" / "model.pt", Path(DATA_PATH) / "models" / "bbox_model.pt"])
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated")
                _deepbet_model = BrainExtraction()
        return _deepbet_model


def _to_nibabel(image: sitk.Image) -> Any:
    """The same voxels and geometry as a nibabel image (RAS affine, (x, y, z) array)."""
    import nibabel as nib

    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = lps_to_ras @ np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    affine[:3, 3] = lps_to_ras @ np.array(image.GetOrigin())
    array = sitk.GetArrayFromImage(image).astype(np.float32).transpose(2, 1, 0)
    return nib.Nifti1Image(np.ascontiguousarray(array), affine)


def _deepbet(image: sitk.Image, name: str, threshold: float) -> sitk.Image:
    extractor = _deepbet_extractor()
    try:
        _, mask_nifti, _ = extractor.run(_to_nibabel(image), threshold=threshold)
    except AssertionError as error:  # deepbet asserts when it finds no head
        raise PreprocessingError(f"Skull stripping of {name} (deepbet) failed: {error}.") from None
    except ValueError as error:  # e.g. no connected component at all
        raise PreprocessingError(f"Skull stripping of {name} (deepbet) found no brain: {error}.") from None
    array = np.asarray(mask_nifti.dataobj).astype(np.uint8).transpose(2, 1, 0)
    mask = sitk.GetImageFromArray(np.ascontiguousarray(array))
    mask.CopyInformation(image)
    return mask


# --------------------------------------------------------------------------- HD-BET


def _hdbet_missing() -> Optional[str]:
    if importlib.util.find_spec("HD_BET") is None:
        return "the 'HD_BET' package is not installed (pip install hd-bet)"
    try:
        from HD_BET.hd_bet_prediction import get_hdbet_predictor, hdbet_predict  # noqa: F401
        from HD_BET.paths import folder_with_parameter_files
    except ImportError as error:
        return f"HD-BET is installed but is not version 2 or later ({error}); pip install -U hd-bet"
    weights = Path(folder_with_parameter_files) / "fold_all" / "checkpoint_final.pth"
    if not weights.exists():
        return (f"HD-BET's weights are missing ({weights}); run the 'hd-bet' command once on any image "
                "with internet access, or unpack its release zip there")
    return None


def _hdbet(image: sitk.Image, name: str) -> sitk.Image:
    missing = _hdbet_missing()
    if missing:
        raise PreprocessingError(f"Skull stripping of {name}: backend 'hd-bet' cannot run: {missing}.")
    import torch
    from HD_BET.hd_bet_prediction import get_hdbet_predictor, hdbet_predict

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="ricenet-hdbet-") as folder:
        source = Path(folder) / "image.nii.gz"
        target = Path(folder) / "brain.nii.gz"
        sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), str(source))
        options: dict[str, Any] = {"keep_brain_mask": True}
        if "compute_brain_extracted_image" in inspect.signature(hdbet_predict).parameters:
            options["compute_brain_extracted_image"] = False
        try:
            predictor = get_hdbet_predictor(use_tta=False, device=device)
            hdbet_predict(str(source), str(target), predictor, **options)
            result = sitk.ReadImage(str(Path(folder) / "brain_bet.nii.gz"))
        except Exception as error:  # HD-BET / nnU-Net raise assorted types
            raise PreprocessingError(f"Skull stripping of {name} (hd-bet) failed: {error}") from None
    mask = sitk.Cast(sitk.GetImageFromArray((sitk.GetArrayViewFromImage(result) > 0).astype(np.uint8)), sitk.sitkUInt8)
    mask.CopyInformation(image)
    return mask
