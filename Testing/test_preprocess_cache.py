"""The on-disk cache of preprocessed cases (RICENetLib.preprocess_cache)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from RICENetLib.errors import InputError
from RICENetLib.preprocess_cache import PreprocessCache
from RICENetLib.preprocessing import PreprocessParameters
from RICENetLib.synthetic import generate_case, write_case

PARAMS = PreprocessParameters(spacing_mm=4.0, input_size=48, skull_strip="none")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_case(generate_case("C01", "rice", seed=2, size=56), tmp_path_factory.mktemp("cache") / "C01")


@pytest.fixture()
def files(written, tmp_path):
    """A fresh copy of the case per test: tests touch and edit the files."""
    folder = shutil.copytree(written["postop"].parent, tmp_path / "C01")
    return {name: folder / path.name for name, path in written.items()}


def _paths(files):
    return files["postop"], files["event"], files["dose"]


def test_second_call_is_read_from_disk(files, tmp_path):
    cache = PreprocessCache(tmp_path / "cache")
    first = cache.get_or_compute(*_paths(files), PARAMS, case_id="C01")
    second = cache.get_or_compute(*_paths(files), PARAMS, case_id="C01")
    assert (cache.misses, cache.hits) == (1, 1)
    for modality in first.arrays:
        assert np.array_equal(first.arrays[modality], second.arrays[modality])
    assert second.event_to_reference.GetParameters() == first.event_to_reference.GetParameters()
    assert second.info["case_id"] == "C01" and first.reference is None
    key = cache.key(*_paths(files), PARAMS)
    assert (cache.path(key) / "preprocess.json").exists()


def test_key_follows_parameters_and_files(files, tmp_path):
    cache = PreprocessCache(tmp_path / "cache")
    key = cache.key(*_paths(files), PARAMS)
    assert cache.key(*_paths(files), PARAMS) == key
    assert cache.key(*_paths(files), PARAMS.with_updates(spacing_mm=3.0)) != key
    stat = os.stat(files["dose"])
    os.utime(files["dose"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.key(*_paths(files), PARAMS) != key


def test_content_hash_ignores_touching_but_not_editing(files, tmp_path):
    cache = PreprocessCache(tmp_path / "cache", content_hash=True)
    key = cache.key(*_paths(files), PARAMS)
    stat = os.stat(files["event"])
    os.utime(files["event"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.key(*_paths(files), PARAMS) == key
    with open(files["event"], "ab") as handle:
        handle.write(b"\0")
    assert cache.key(*_paths(files), PARAMS) != key


def test_damaged_entry_is_recomputed(files, tmp_path):
    cache = PreprocessCache(tmp_path / "cache")
    cache.get_or_compute(*_paths(files), PARAMS)
    entry = cache.path(cache.key(*_paths(files), PARAMS))
    (entry / "event.nii.gz").unlink()
    again = cache.get_or_compute(*_paths(files), PARAMS)
    assert cache.misses == 2 and again.arrays["event"].shape == (48, 48, 48)
    assert (entry / "event.nii.gz").exists()


def test_cache_needs_paths(files, tmp_path):
    from RICENetLib.image_io import read_image

    with pytest.raises(InputError, match="needs file paths; the postop image"):
        PreprocessCache(tmp_path).get_or_compute(read_image(files["postop"]), files["event"], files["dose"], PARAMS)
    with pytest.raises(InputError, match="does not exist"):
        PreprocessCache(tmp_path).key(tmp_path / "missing.nii.gz", files["event"], files["dose"], PARAMS)
