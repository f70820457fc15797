"""The command line against its environment: Ctrl-C, operating-system errors, and what stays a traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from RICENetLib.cli import main, os_error_message
from RICENetLib.registration import register_rigid
from RICENetLib.synthetic import generate_case, write_case


@pytest.fixture(scope="module")
def case():
    return generate_case("INT", "recurrence", seed=6, size=48)


def test_ctrl_c_in_a_registration_callback_is_an_interrupt_not_a_registration_failure(case):
    """SimpleITK turns an exception in a Python command into "error executing the Python Callable"."""
    calls = []

    def progress(fraction: float, message: str) -> None:
        calls.append(message)
        if "registration level" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        register_rigid(case.postop, case.event, progress=progress)
    assert any("registration level" in m for m in calls)


def test_a_failing_progress_callback_keeps_its_own_error(case):
    def progress(fraction: float, message: str) -> None:
        if "registration level" in message:
            raise ZeroDivisionError("a bug in the caller")

    with pytest.raises(ZeroDivisionError, match="a bug in the caller"):
        register_rigid(case.postop, case.event, progress=progress)


DRIVER = textwrap.dedent("""
    import os, signal, sys
    import RICENetLib.commands.progressbar as bar
    real = bar.progress_bar

    def progress_bar(description):  # a real SIGINT, sent once registration has begun
        import contextlib

        @contextlib.contextmanager
        def wrapped():
            with real(description) as update:
                def report(fraction, message):
                    if "registration level" in message:
                        os.kill(os.getpid(), signal.SIGINT)
                    update(fraction, message)
                yield report
        return wrapped()

    bar.progress_bar = progress_bar
    from RICENetLib.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigint_during_registration_exits_130_without_a_traceback(case, tmp_path):
    paths = write_case(case, tmp_path / "case")
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", DRIVER, "preprocess", "--postop", str(paths["postop"]), "--event",
                           str(paths["event"]), "--dose", str(paths["dose"]), "--out", str(out), "--skull-strip",
                           "none", "--spacing", "4", "--input-size", "40"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "ricenet preprocess: interrupted"
    assert "Traceback" not in done.stderr and "Registration" not in done.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_os_errors_naming_a_file_are_one_line_others_keep_their_traceback(monkeypatch, capsys):
    import RICENetLib.commands.info as info

    def fails(error):
        def run(args):
            raise error
        return run

    monkeypatch.setattr(info, "run", fails(PermissionError(errno.EACCES, "Permission denied", "/data/P1/postop.nii.gz")))
    assert main(["info", "x.nii.gz"]) == 2
    assert capsys.readouterr().err == "ricenet info: error: Permission denied: /data/P1/postop.nii.gz\n"
    monkeypatch.setattr(info, "run", fails(OSError(errno.ENOSPC, "No space left on device")))
    assert main(["info", "x.nii.gz"]) == 2
    assert capsys.readouterr().err == "ricenet info: error: No space left on device\n"
    monkeypatch.setattr(info, "run", fails(OSError(errno.EBADF, "Bad file descriptor")))  # a bug, not the machine
    with pytest.raises(OSError, match="Bad file descriptor"):
        main(["info", "x.nii.gz"])
    monkeypatch.setattr(info, "run", fails(TypeError("a programming error")))
    with pytest.raises(TypeError):
        main(["info", "x.nii.gz"])
    assert os_error_message(FileExistsError(errno.EEXIST, "File exists", "a", None, "b")) == "File exists: a -> b"
