"""The CLI progress bar stays readable in a log file, and its time left ignores the untimed stages before the work."""

from __future__ import annotations

import pytest

from RICENetLib.commands.progressbar import MIN_TIMED_PROGRESS, Eta, progress_bar


def test_a_log_file_gets_a_few_redraws_not_one_per_report(capsys):
    with progress_bar("occlusion") as report:
        for box in range(2000):
            report(box / 2000, f"box {box}")
        report(1.0, "done")
    err = capsys.readouterr().err
    redraws = err.count("occlusion:")
    assert 1 <= redraws <= 6, redraws  # opening, first report, final 100 %, close: not one per report
    assert "100%" in err and "done" in err


def test_the_time_left_is_measured_after_preprocessing_only():
    """Preprocessing: 15 % of the bar in 20 s; then occlusion: 1 % per 6 s. The estimate must come from the second."""
    eta = Eta(timed_from=0.15)
    assert [eta.update(f, now=t) for f, t in ((0.0, 0.0), (0.05, 5.0), (0.14, 20.0))] == [None, None, None]
    assert eta.update(0.15, now=20.0) is None  # the timed part begins here
    assert eta.update(0.15 + MIN_TIMED_PROGRESS / 2, now=23.0) is None  # too little to measure a pace
    assert eta.update(0.25, now=80.0) == pytest.approx(6.0 * 75)  # 10 % in 60 s: 75 % left takes 450 s
    assert eta.update(1.0, now=530.0) == 0.0
    # From the start, the old estimate after preprocessing was (20 s / 15 %) × 85 % = 113 s instead of 510 s.
    assert Eta().update(0.0, now=0.0) is None and Eta(0.0).update(0.5, now=10.0) is None


def test_the_bar_shows_no_estimate_before_the_timed_part(capsys):
    with progress_bar("predicting", timed_from=0.5) as report:
        report(0.4, "preprocessing")
    assert "<?" in capsys.readouterr().err
