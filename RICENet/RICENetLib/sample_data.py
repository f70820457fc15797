"""The synthetic case's entry in Slicer's Sample Data module, on Slicer 5.10 and later.

Slicer's ``SampleData.SampleDataLogic`` is passed in (this file imports
nothing of Slicer), so the choices are tested outside it:

* ``registerCustomSampleDataSource`` (5.10 and later) takes no display name of
  its own: the button shows ``sampleName``, so that is the readable
  ``"RICE-NET synthetic case"``;
* it builds a ``SampleDataSource``, which requires ``uris`` and ``fileNames``
  to be lists of one length (``None`` fails on ``len``); the case is generated
  locally, so both are empty and the button calls ``customDownloader``;
* ``registerCustomSampleDataCategory`` (a translatable category title) exists
  only from Slicer 5.12; on 5.10 the category key itself is the title.

>>> register_sample_data(SampleData.SampleDataLogic, loadSyntheticSample, thumbnail)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, Callable

SAMPLE_CATEGORY = "RICE-NET"
SAMPLE_NAME = "RICE-NET synthetic case"


def sample_source_arguments(downloader: Callable[..., Any], thumbnail: str | os.PathLike) -> dict[str, Any]:
    """Keyword arguments for ``SampleDataLogic.registerCustomSampleDataSource`` (all of them exist in Slicer 5.10)."""
    return {
        "category": SAMPLE_CATEGORY,
        "sampleName": SAMPLE_NAME,
        "uris": [],
        "fileNames": [],
        "nodeNames": [],
        "thumbnailFileName": os.fspath(thumbnail),
        "customDownloader": downloader,
    }


def register_sample_data(sample_data_logic: Any, downloader: Callable[..., Any], thumbnail: str | os.PathLike,
                         title: str = SAMPLE_CATEGORY) -> bool:
    """Register the sample; returns True when the category title could be set too (Slicer 5.12 and later)."""
    titled = hasattr(sample_data_logic, "registerCustomSampleDataCategory")
    if titled:
        sample_data_logic.registerCustomSampleDataCategory(SAMPLE_CATEGORY, title=title)
    sample_data_logic.registerCustomSampleDataSource(**sample_source_arguments(downloader, thumbnail))
    return titled
