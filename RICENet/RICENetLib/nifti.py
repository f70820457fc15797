"""NIfTI through nibabel where SimpleITK falls short: the header alone, and NIfTI-2 files.

SimpleITK cannot open NIfTI-2 (540-byte header) at all; nibabel can, and its
affine (RAS: the sform if set, else the qform) gives the geometry. The header
alone tells :mod:`RICENetLib.file_integrity` how many bytes of which type to
expect (SimpleITK 2.5 reads NaN/inf voxels of a NIfTI file as 0, so they are
counted there, from the raw bytes).

>>> image = read_with_nibabel(Path("t1c_nifti2.nii.gz"))   # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError


def is_nifti2(path: Path) -> bool:
    """True when the file's header is NIfTI-2 (sizeof_hdr 540, either byte order)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            first = handle.read(4)
    except (OSError, EOFError):
        return False
    return len(first) == 4 and 540 in (struct.unpack("<i", first)[0], struct.unpack(">i", first)[0])


def read_header(path: Path):
    """The NIfTI-1 or NIfTI-2 header alone (nibabel's ``load`` would already refuse a short file, less clearly)."""
    import nibabel as nib

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            kind = nib.Nifti2Header if is_nifti2(path) else nib.Nifti1Header
            return kind.from_fileobj(handle, check=False)  # only shape, type and offset are needed
    except Exception as error:  # nibabel, gzip and struct raise several types for a broken header
        raise InputError(f"Image {path} could not be read as NIfTI: {error}") from None


def read_with_nibabel(path: Path) -> sitk.Image:
    """A NIfTI file (NIfTI-2 included) as a SimpleITK image in LPS, geometry from nibabel's affine."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as error:  # nibabel raises several types for broken files
        raise InputError(f"Image {path} could not be read as NIfTI: {error}") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"Image {path} has shape {data.shape}; a 3D volume is needed.")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(image.affine, dtype=np.float64)
    matrix = lps[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    if not np.all(spacing > 0):
        raise InputError(f"Image {path} has a zero voxel size in its affine {image.affine.tolist()}.")
    direction = matrix / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(f"Image {path} has a sheared affine; only rotations and voxel sizes can be represented. "
                         "Resample it to an orthogonal grid first.")
    if data.dtype == np.float16 or data.dtype == np.bool_:
        data = data.astype(np.float32)
    result = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    result.SetSpacing(tuple(float(v) for v in spacing))
    result.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    result.SetDirection(tuple(float(v) for v in direction.ravel()))
    return result
