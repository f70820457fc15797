"""Stopping a worker the GUI started: the task stays the widget's until its thread has really ended.

A worker stops at its next progress report, which can be a whole forward
pass away. Until then the widget must keep the task (so Apply stays
disabled and no second run starts beside it) and keep polling; when Slicer
quits it must wait, within a bound, for the thread before the interpreter
goes away. Qt-free: the widgets call these with the task they poll.

>>> task = BackgroundTask(lambda progress, cancel: 42).start()        # doctest: +SKIP
>>> stop(task, timeout_s=QUIT_WAIT_S)                                  # doctest: +SKIP
True
"""

from __future__ import annotations

from typing import Any

#: Waiting for the worker when the scene closes: the GUI keeps polling afterwards, so no need to block.
SCENE_CLOSE_WAIT_S = 0.5
#: Waiting for the worker when Slicer quits (the module's cleanup): one forward pass on a CPU takes ~20 s.
QUIT_WAIT_S = 30.0


def stop(task: Any, timeout_s: float) -> bool:
    """Ask ``task`` to stop and wait up to ``timeout_s``; True when its thread has ended."""
    task.cancel()
    return task.wait(timeout_s).finished


def outcome(task: Any, status: Any) -> str:
    """The state to act on for a finished ``status``: a run the user stopped counts as cancelled even if it
    finished just before it saw the request (its result belongs to a closed scene or an abandoned run)."""
    if status.state == "done" and task.cancel_requested:
        return "cancelled"
    return status.state
