"""The main-thread GIL yielder: its start/stop protocol, and that both Slicer modules wire it to a 0 ms QTimer.

Whether it really lets a worker run under PythonQt's GIL policy is
``test_slicer_threading.py`` (a C host); here: the bookkeeping, on real
:class:`BackgroundTask` threads, and the module files read statically (they
need the Slicer application to run).
"""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import pytest

from RICENetLib.background import BackgroundTask
from RICENetLib.gil_yield import DEFAULT_SLEEP_S, MAX_SLEEP_S, MainThreadYielder

REPO = Path(__file__).resolve().parents[1]


class RecordingTimer:
    """Stands in for qt.QTimer's start()/stop() only, recording the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")


def gated_task() -> tuple[BackgroundTask, threading.Event]:
    gate = threading.Event()
    return BackgroundTask(lambda progress, cancel: gate.wait(10)).start(), gate


def test_thread_alive_follows_the_worker_thread():
    task = BackgroundTask(lambda progress, cancel: None)
    assert not task.thread_alive  # not started
    task, gate = gated_task()
    assert task.thread_alive
    gate.set()
    assert task.wait(5).state == "done"
    assert not task.thread_alive


def test_watch_starts_the_timer_once_and_the_first_tick_without_a_live_thread_stops_it():
    timer = RecordingTimer()
    yielder = MainThreadYielder(timer, sleep_s=0.001)
    first, first_gate = gated_task()
    second, second_gate = gated_task()
    yielder.watch(first)
    yielder.watch(second)
    assert timer.calls == ["start"] and yielder.active
    yielder.tick()
    first_gate.set()
    first.wait(5)
    yielder.tick()  # the second still runs: keeps yielding
    assert timer.calls == ["start"] and yielder.stats.ticks == 2
    second_gate.set()
    second.wait(5)
    yielder.tick()
    assert timer.calls == ["start", "stop"] and not yielder.active
    assert yielder.stats.ticks == 2
    # A new task starts it again.
    third, third_gate = gated_task()
    yielder.watch(third)
    assert timer.calls == ["start", "stop", "start"]
    third_gate.set()
    third.wait(5)
    yielder.tick()
    assert timer.calls[-1] == "stop"


def test_a_cancelled_task_is_yielded_to_until_its_thread_ends():
    timer = RecordingTimer()
    yielder = MainThreadYielder(timer, sleep_s=0.001)
    release = threading.Event()

    def work(progress, cancel):
        release.wait(10)  # a long step: the cancel is seen at the next report
        progress(0.5)

    task = BackgroundTask(work).start()
    yielder.watch(task)
    task.cancel()
    yielder.tick()
    assert yielder.active, "the cancelled worker has not reached its next report yet"
    release.set()
    assert task.wait(5).state == "cancelled"
    yielder.tick()
    assert not yielder.active and timer.calls == ["start", "stop"]


def test_a_tick_sleeps_with_the_gil_released():
    yielder = MainThreadYielder(RecordingTimer(), sleep_s=0.005)
    counts = [0]
    stop = threading.Event()

    def spin(progress, cancel):
        while not stop.is_set():
            counts[0] += 1

    task = BackgroundTask(spin).start()
    yielder.watch(task)
    began = time.perf_counter()
    yielder.tick()
    took = time.perf_counter() - began
    stop.set()
    task.wait(5)
    assert took >= 0.005 and yielder.stats.longest_tick_s >= 0.005
    assert yielder.stats.slept_s == pytest.approx(0.005) and counts[0] > 0


def test_stop_forgets_the_tasks_and_stops_the_timer():
    timer = RecordingTimer()
    yielder = MainThreadYielder(timer)
    task, gate = gated_task()
    yielder.watch(task)
    yielder.stop()
    assert timer.calls == ["start", "stop"] and not yielder.active
    yielder.tick()  # a tick already queued finds nothing to do
    assert timer.calls == ["start", "stop"] and yielder.stats.ticks == 0
    gate.set()
    task.wait(5)


@pytest.mark.parametrize("sleep_s", [0.0, -0.001, MAX_SLEEP_S * 2])
def test_a_sleep_outside_the_responsive_range_is_refused(sleep_s):
    with pytest.raises(ValueError, match="sleep_s"):
        MainThreadYielder(RecordingTimer(), sleep_s=sleep_s)


def test_the_default_sleep_keeps_the_gui_responsive():
    # A tick blocks the main thread for its sleep plus at most the switch interval (5 ms) to get the GIL back.
    assert DEFAULT_SLEEP_S + 0.005 <= 0.05


# --------------------------------------------------------------------------- the module files


def _method(tree: ast.Module, cls: str, name: str) -> ast.FunctionDef:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == name:
                    return item
    raise AssertionError(f"{cls}.{name} not found")


def _calls(function: ast.FunctionDef) -> list[str]:
    """The calls in ``function``, unparsed, in source order."""
    return [ast.unparse(node) for node in ast.walk(function) if isinstance(node, ast.Call)]


@pytest.mark.parametrize("module, widget, start_method", [
    ("RICENet", "RICENetWidget", "onApplyButton"),
    ("RICENetTraining", "RICENetTrainingWidget", "_start"),
])
def test_the_module_yields_through_a_zero_ms_timer_from_the_task_start(module, widget, start_method):
    tree = ast.parse((REPO / module / f"{module}.py").read_text(encoding="utf-8"))
    setup = _calls(_method(tree, widget, "setup"))
    assert "qt.QTimer()" in setup
    assert "self._yieldTimer.setInterval(0)" in setup
    assert "MainThreadYielder(self._yieldTimer)" in setup
    assert "self._yieldTimer.connect('timeout()', self._yielder.tick)" in setup
    starting = _calls(_method(tree, widget, start_method))
    assert "self._yielder.watch(self._task)" in starting
    # watch() comes after the task was made (it starts the timer; the yielder stops it when the thread ended).
    source = ast.unparse(_method(tree, widget, start_method))
    assert source.index("self._task = ") < source.index("self._yielder.watch(self._task)")
    imports = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "RICENetLib.gil_yield"]
    assert imports and imports[0].names[0].name == "MainThreadYielder"
