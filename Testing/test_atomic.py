"""Atomic writes under real failures: a killed writer, a full disk, NaN in JSON, the umask."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from RICENetLib.atomic import atomic_directory, atomic_path, remove_stale_temporaries, write_json, write_text
from RICENetLib.errors import OutputError, RICENetError


def run_child(code: str, *args: str, fsize_limit: int | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; with ``fsize_limit`` every write past that size fails with EFBIG,
    as on a full disk (RLIMIT_FSIZE, SIGXFSZ ignored), without mounting anything."""
    prelude = ""
    if fsize_limit is not None:
        prelude = (f"import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                   f"resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize_limit}, {fsize_limit}))\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_write_json_refuses_nan_naming_the_value(tmp_path):
    target = tmp_path / "prediction.json"
    with pytest.raises(OutputError, match=r"prediction.json: folds.1.probabilities.rice = nan is not a number"):
        write_json(target, {"label": "rice", "folds": [{"probabilities": {"rice": 0.2}},
                                                       {"probabilities": {"rice": float("nan")}}]})
    with pytest.raises(OutputError, match=r"spread = inf"):
        write_json(target, {"spread": float("inf")})
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"p": 0.5})
    assert json.loads(target.read_text()) == {"p": 0.5}


def test_files_and_folders_get_the_umask_permissions(tmp_path):
    before = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        with atomic_directory(tmp_path / "folder") as tmp:
            (tmp / "sub").mkdir(mode=0o700)
            fd = os.open(tmp / "sub" / "private", os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "folder" / "sub").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "folder" / "sub" / "private").stat().st_mode) == 0o644


def test_killed_folder_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "out"
    child = run_child("""
        import os, signal, sys
        from RICENetLib.atomic import atomic_directory
        with atomic_directory(sys.argv[1]) as tmp:
            (tmp / "half.bin").write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
    """, str(target))
    assert child.returncode == -signal.SIGKILL, child.stderr
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert len(leftovers) == 1 and not target.exists()  # what a kill really leaves

    # A writer still at work (a live process on this host) keeps its temporary.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket
        import re

        host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())
        busy = tmp_path / f".out.abc123.{host}.{sleeper.pid}.tmp"
        busy.mkdir()
        unknown = tmp_path / ".out.old-style.tmp"  # no writer recorded: not ours to judge
        unknown.mkdir()
        with atomic_directory(target) as tmp:
            (tmp / "whole.bin").write_bytes(b"y")
        assert not leftovers[0].exists() and busy.exists() and unknown.exists()
        assert [p.name for p in target.iterdir()] == ["whole.bin"]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale_temporaries(tmp_path, "out") == [busy]


def test_kill_between_the_two_renames_of_a_replacement_brings_the_previous_version_back(tmp_path):
    target = tmp_path / "bundle"
    with atomic_directory(target) as tmp:
        (tmp / "version").write_text("1")
    child = run_child("""
        import os, signal, sys
        from RICENetLib.atomic import atomic_directory
        real, calls = os.replace, []
        def replace(a, b):
            calls.append(a)
            if len(calls) == 2:  # the old version is set aside; the new one is not yet in place
                os.kill(os.getpid(), signal.SIGKILL)
            real(a, b)
        os.replace = replace
        with atomic_directory(sys.argv[1], overwrite=True) as tmp:
            (tmp / "version").write_text("2")
    """, str(target))
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert not target.exists() and (tmp_path / ".bundle.old" / "version").read_text() == "1"
    with pytest.raises(RICENetError, match="already exists"):  # the previous version is back in place
        with atomic_directory(target):
            pass
    assert (target / "version").read_text() == "1" and not (tmp_path / ".bundle.old").exists()


def test_full_disk_while_writing_is_one_line_naming_the_file_and_keeps_what_was_there(tmp_path):
    (tmp_path / "result.bin").write_bytes(b"previous")
    with atomic_directory(tmp_path / "folder") as tmp:
        (tmp / "a").write_text("previous")
    child = run_child("""
        import sys
        from pathlib import Path
        from RICENetLib.atomic import atomic_directory, atomic_path
        from RICENetLib.errors import OutputError
        for attempt in ("file", "folder"):
            try:
                if attempt == "file":
                    with atomic_path(Path(sys.argv[1]) / "result.bin") as tmp:
                        tmp.write_bytes(b"z" * 100_000)
                else:
                    with atomic_directory(Path(sys.argv[1]) / "folder", overwrite=True) as tmp:
                        (tmp / "a").write_bytes(b"z" * 100_000)
            except OutputError as error:
                print(error)
    """, str(tmp_path), fsize_limit=50_000)
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert len(lines) == 2, child.stdout
    assert lines[0].startswith(f"Cannot write {tmp_path / 'result.bin'}: File too large")
    assert lines[1].startswith(f"Cannot write {tmp_path / 'folder'}: File too large")
    assert (tmp_path / "result.bin").read_bytes() == b"previous"
    assert (tmp_path / "folder" / "a").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "result.bin"]  # no temporaries


def test_reading_a_missing_source_is_not_reported_as_a_write_failure(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "copy.txt") as tmp:
            tmp.write_bytes((tmp_path / "absent.txt").read_bytes())
    assert list(tmp_path.iterdir()) == []
