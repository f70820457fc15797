"""The Sample Data entry registers on Slicer 5.10 and later, with a readable name.

Slicer's SampleData module needs the Slicer application (Qt, ctk), so it cannot
run here. The two classes below stand in for ``SampleData.SampleDataLogic`` of
Slicer 5.10 and 5.12 *only* as far as :func:`register_sample_data` touches it:
the keyword parameters of ``registerCustomSampleDataSource`` are spelled out
as in Slicer's ``Modules/Scripted/SampleData/SampleData.py`` (branch 5.10;
unchanged in 5.12 and main), so an argument 5.10 lacks fails with TypeError,
and, like ``SampleDataSource.__init__`` there, ``uris`` and ``fileNames``
must be lists of one length (``None`` fails on ``len``). 5.12 adds
``registerCustomSampleDataCategory(category, title)``.
"""

from __future__ import annotations

import pytest

from RICENetLib.sample_data import SAMPLE_CATEGORY, SAMPLE_NAME, register_sample_data, sample_source_arguments


class SampleDataLogic510:
    """Signature of Slicer 5.10's SampleDataLogic.registerCustomSampleDataSource; no category API."""

    sources: dict[str, list[dict]] = {}

    @classmethod
    def registerCustomSampleDataSource(cls, category="Custom", sampleName=None, uris=None, fileNames=None,
                                       nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                       loadFileTypes=None, loadFiles=None, loadFileProperties={}, checksums=None,
                                       loadFileType=None):
        if not isinstance(uris, (list, tuple, str)):
            raise TypeError("object of type 'NoneType' has no len()")  # what SampleDataSource does with uris=None
        if isinstance(uris, (list, tuple)) and len(uris) != len(fileNames):
            raise ValueError("All fields of sample data source must have the same length")
        cls.sources.setdefault(category, []).append({"sampleName": sampleName, "customDownloader": customDownloader,
                                                     "thumbnailFileName": thumbnailFileName})


class SampleDataLogic512(SampleDataLogic510):
    """5.12 adds a translatable category title."""

    titles: dict[str, str] = {}

    @classmethod
    def registerCustomSampleDataCategory(cls, category, title):
        cls.titles[category] = title


@pytest.fixture(autouse=True)
def empty_registries():
    SampleDataLogic510.sources = {}
    SampleDataLogic512.sources = {}
    SampleDataLogic512.titles = {}


def downloader(source=None):
    return []


def test_registers_on_slicer_5_10_without_the_category_api():
    assert register_sample_data(SampleDataLogic510, downloader, "/icons/RICENetSample.png") is False
    (entry,) = SampleDataLogic510.sources[SAMPLE_CATEGORY]
    assert entry == {"sampleName": "RICE-NET synthetic case", "customDownloader": downloader,
                     "thumbnailFileName": "/icons/RICENetSample.png"}


def test_sets_the_category_title_where_slicer_has_the_api():
    assert register_sample_data(SampleDataLogic512, downloader, "/icons/x.png", title="RICE-NET (translated)") is True
    assert SampleDataLogic512.titles == {SAMPLE_CATEGORY: "RICE-NET (translated)"}
    assert [e["sampleName"] for e in SampleDataLogic512.sources[SAMPLE_CATEGORY]] == [SAMPLE_NAME]


def test_the_old_call_fails_on_5_10_as_reported():
    """The registration this replaces: category API first (AttributeError on 5.10), and uris=None."""
    with pytest.raises(AttributeError):
        SampleDataLogic510.registerCustomSampleDataCategory("RICE-NET", title="RICE-NET")
    with pytest.raises(TypeError):
        SampleDataLogic510.registerCustomSampleDataSource(category="RICE-NET", sampleName="RICENetSyntheticCase",
                                                          customDownloader=downloader)


def test_the_name_shown_is_readable():
    arguments = sample_source_arguments(downloader, "t.png")
    # 5.10's registerCustomSampleDataSource passes no sampleDescription, so the button shows sampleName.
    assert arguments["sampleName"] == SAMPLE_NAME and " " in SAMPLE_NAME and SAMPLE_NAME.startswith("RICE-NET")
    assert arguments["uris"] == arguments["fileNames"] == arguments["nodeNames"] == []
