"""Is an image file whole? Truncated and corrupt NIfTI/NRRD/MHA files, found before ITK reads them.

ITK's readers do not always notice: a ``.nii.gz`` cut to 90 % of its length
reads without an error, its last slices silently zero, and a worse cut only
surfaces later as a failed registration. So the data a header promises is
counted here: uncompressed, file size against header offset + voxel bytes;
compressed, the whole stream is decompressed (which also checks gzip's CRC)
and its length compared. The cost is one extra decompression of the file.

>>> check_complete(Path("case/postop.nii.gz"))            # doctest: +SKIP
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Optional

import numpy as np

from .errors import InputError

_CHUNK = 1 << 20


def check_complete(path: Path) -> int:
    """Raise :class:`InputError` naming ``path`` if it holds fewer bytes than its header promises.

    Returns how many NaN/inf voxels a NIfTI file of floats holds (counted in
    the same pass, since SimpleITK reads them as 0); 0 for other formats,
    whose readers keep such values for :func:`RICENetLib.image_io.check_volume`.
    """
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _check_nifti(path)
    if name.endswith((".nrrd", ".nhdr")):
        _check_nrrd(path)
    elif name.endswith((".mha", ".mhd")):
        _check_metaimage(path)
    return 0


def _refuse(path: Path, what: str) -> InputError:
    return InputError(f"Image {path} is truncated or corrupt: {what}; copy or export the file again.")


def _inflated_length(handle: BinaryIO, path: Path, wbits: int, expected: int,
                     sink: Optional[Callable[[bytes], None]] = None) -> int:
    """Bytes a gzip (``wbits`` 31) or zlib (15) stream at the handle's position inflates to, read to its end.

    zlib checks gzip's CRC and length; a stream that stops before its end
    marker is a truncated file. Concatenated gzip members are all counted.
    ``sink`` sees every inflated byte, in order.
    """
    inflater, total, ended = zlib.decompressobj(wbits), 0, False
    try:
        while not (ended and wbits != 31) and (chunk := handle.read(_CHUNK)):
            while chunk:
                data = inflater.decompress(chunk)
                total += len(data)
                if sink is not None:
                    sink(data)
                ended, chunk = inflater.eof, b""
                if ended and wbits == 31 and inflater.unused_data.startswith(b"\x1f\x8b"):
                    chunk = inflater.unused_data  # the next gzip member
                    inflater, ended = zlib.decompressobj(wbits), False
                elif ended:
                    break  # the end of the stream; trailing bytes (padding) are ignored
            if ended and inflater.unused_data:
                break
        total += len(inflater.flush())
    except zlib.error as error:
        raise _refuse(path, f"its compressed data is damaged ({error})") from None
    if not ended:
        raise _refuse(path, f"its compressed data ends early: it inflates to {total:,} of the {expected:,} "
                            f"bytes its header promises ({100 * total / max(expected, 1):.0f} %)")
    return total


class _NonFiniteCounter:
    """Counts NaN/inf values of ``dtype`` in a byte stream, from ``offset`` for ``count`` values."""

    def __init__(self, dtype: np.dtype, offset: int, count: int) -> None:
        self.dtype, self.skip, self.left, self.rest, self.non_finite = dtype, offset, count, b"", 0

    def __call__(self, data: bytes) -> None:
        if self.skip:
            cut = min(self.skip, len(data))
            data, self.skip = data[cut:], self.skip - cut
        data = self.rest + data
        usable = min(len(data) // self.dtype.itemsize, self.left)
        if usable:
            values = np.frombuffer(data, dtype=self.dtype, count=usable)
            self.non_finite += usable - int(np.count_nonzero(np.isfinite(values)))
            self.left -= usable
        self.rest = data[usable * self.dtype.itemsize:] if self.left else b""


def _check_nifti(path: Path) -> int:
    from .nifti import read_header

    header = read_header(path)
    shape = [int(n) for n in header.get_data_shape()]
    voxels = 1
    for n in shape:
        voxels *= n
    dtype = header.get_data_dtype()
    offset = int(header.get_data_offset())
    expected = offset + voxels * dtype.itemsize
    counter = _NonFiniteCounter(dtype, offset, voxels) if dtype.kind == "f" else None
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as handle:
            actual = _inflated_length(handle, path, 31, expected, counter)
        kind = "decompressed bytes"
    else:
        actual = path.stat().st_size
        kind = "bytes"
    if actual < expected:
        raise _refuse(path, f"its header promises {expected:,} {kind} for {'×'.join(map(str, shape))} voxels "
                            f"but it holds {actual:,} ({100 * actual / expected:.0f} %)")
    if counter is not None and not path.name.lower().endswith(".gz"):
        values = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(voxels,))
        for start in range(0, voxels, _CHUNK):
            block = values[start:start + _CHUNK]
            counter.non_finite += block.size - int(np.count_nonzero(np.isfinite(block)))
        del values
    non_finite = counter.non_finite if counter is not None else 0
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    # A slope of 0 or NaN means "no scaling"; an infinite slope or intercept makes every voxel infinite.
    if np.isinf(slope) or (slope != 0 and np.isfinite(slope) and np.isinf(inter)):
        non_finite = voxels
    return non_finite


def _nrrd_item_size(type_name: str) -> Optional[int]:
    t = type_name.strip().lower()
    if t == "block":
        return None
    if "char" in t or "8" in t:
        return 1
    if "16" in t or "short" in t:
        return 2
    if "64" in t or "long" in t or t == "double":
        return 8
    if t == "float" or "int" in t or "32" in t:
        return 4
    return None


def _check_nrrd(path: Path) -> None:
    with open(path, "rb") as handle:
        head = handle.read(64 * 1024)
    if not head.startswith(b"NRRD"):
        raise _refuse(path, "it does not start with the NRRD magic")
    end = head.find(b"\n\n")
    if end < 0:
        return  # a header over 64 KiB or a detached header without data: leave it to ITK
    fields: dict[str, str] = {}
    for line in head[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":" not in line or ":=" in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
        item = _nrrd_item_size(fields["type"])
    except (KeyError, ValueError):
        raise _refuse(path, "its header lacks valid 'sizes' or 'type' fields") from None
    if item is None or int(fields.get("line skip", "0")) != 0 or fields.get("byte skip", "0") != "0":
        return
    expected = item
    for n in sizes:
        expected *= n
    encoding = fields.get("encoding", "raw").lower()
    data_file = fields.get("data file") or fields.get("datafile")
    if data_file:
        if " " in data_file or data_file.upper().startswith("LIST"):
            return  # a list or pattern of files: leave it to ITK
        source, offset = path.parent / data_file, 0
        if not source.is_file():
            raise InputError(f"Image {path} names the data file {source}, which does not exist.")
    else:
        source, offset = path, end + 2
    if encoding == "raw":
        actual = source.stat().st_size - offset
    elif encoding in ("gz", "gzip"):
        with open(source, "rb") as handle:
            handle.seek(offset)
            actual = _inflated_length(handle, path, 31, expected)
    else:
        return  # ascii/hex/bzip2: rare, leave them to ITK
    if actual < expected:
        raise _refuse(path, f"its header promises {expected:,} bytes of {encoding} voxel data but it holds {actual:,}")


_MET_SIZES = {"CHAR": 1, "UCHAR": 1, "SHORT": 2, "USHORT": 2, "INT": 4, "UINT": 4, "LONG": 4, "ULONG": 4,
              "FLOAT": 4, "LONG_LONG": 8, "ULONG_LONG": 8, "DOUBLE": 8}


def _check_metaimage(path: Path) -> None:
    with open(path, "rb") as handle:
        head = handle.read(64 * 1024)
    match = re.search(rb"^ElementDataFile\s*=\s*(\S[^\r\n]*)\r?\n?", head, re.MULTILINE)
    if match is None:
        raise _refuse(path, "its header has no ElementDataFile line")
    fields: dict[str, str] = {}
    for line in head[:match.start()].decode("latin-1").splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key.strip().lower()] = value.strip()
    if "headersize" in fields:
        return
    try:
        sizes = [int(v) for v in fields["dimsize"].split()]
        item = _MET_SIZES.get(fields["elementtype"].upper().removeprefix("MET_"))
        channels = int(fields.get("elementnumberofchannels", "1"))
    except (KeyError, ValueError):
        raise _refuse(path, "its header lacks valid DimSize or ElementType") from None
    if item is None:
        return
    expected = item * channels
    for n in sizes:
        expected *= n
    data_file = match.group(1).decode("latin-1").strip()
    if data_file.upper() == "LOCAL":
        source, offset = path, match.end()
    elif " " in data_file or data_file.upper() == "LIST" or "%" in data_file:
        return
    else:
        source, offset = path.parent / data_file, 0
        if not source.is_file():
            raise InputError(f"Image {path} names the data file {source}, which does not exist.")
    if fields.get("compresseddata", "false").lower() != "true":
        actual = source.stat().st_size - offset
    else:
        with open(source, "rb") as handle:
            handle.seek(offset)
            actual = _inflated_length(handle, path, 15, expected)
    if actual < expected:
        raise _refuse(path, f"its header promises {expected:,} bytes of voxel data but it holds {actual:,}")
