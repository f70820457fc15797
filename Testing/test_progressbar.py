"""The CLI progress bar stays readable in a log file: it does not redraw on every report."""

from __future__ import annotations

from RICENetLib.commands.progressbar import progress_bar


def test_a_log_file_gets_a_few_redraws_not_one_per_report(capsys):
    with progress_bar("occlusion") as report:
        for box in range(2000):
            report(box / 2000, f"box {box}")
        report(1.0, "done")
    err = capsys.readouterr().err
    redraws = err.count("occlusion:")
    assert 1 <= redraws <= 6, redraws  # opening, first report, final 100 %, close: not one per report
    assert "100%" in err and "done" in err
