"""Stopping a worker: the widget keeps the task until its thread has ended; a stopped run's result is dropped.

Real :class:`~RICENetLib.background.BackgroundTask` threads; the work blocks
on an event, as a long forward pass does between two progress reports.
"""

from __future__ import annotations

import threading

from RICENetLib import task_stop
from RICENetLib.background import BackgroundTask


def blocked_work(release: threading.Event, reached: threading.Event):
    def work(progress, cancel):
        progress(0.1, "step 1")
        reached.set()
        release.wait(10)  # a step that does not look at cancel
        return "result"

    return work


def test_stop_reports_a_thread_still_running_until_it_has_ended():
    release, reached = threading.Event(), threading.Event()
    task = BackgroundTask(blocked_work(release, reached)).start()
    assert reached.wait(5)
    assert task_stop.stop(task, timeout_s=0.05) is False  # the widget keeps the task: Apply stays disabled
    assert not task.status().finished and task.cancel_requested
    release.set()
    assert task_stop.stop(task, timeout_s=5) is True
    status = task.status()
    # The work returned normally, but the user had stopped it: its result is not shown.
    assert status.state == "cancelled" and task_stop.outcome(task, status) == "cancelled"


def test_a_run_that_finished_just_before_the_stop_counts_as_cancelled():
    task = BackgroundTask(lambda progress, cancel: 42).start()
    status = task.wait(5)
    assert status.state == "done" and task_stop.outcome(task, status) == "done"
    assert task_stop.stop(task, timeout_s=1) is True
    assert task_stop.outcome(task, task.status()) == "cancelled"


def test_failures_stay_failures():
    def fail(progress, cancel):
        raise ValueError("boom")

    task = BackgroundTask(fail).start()
    assert task_stop.outcome(task, task.wait(5)) == "failed"
    assert task_stop.QUIT_WAIT_S > task_stop.SCENE_CLOSE_WAIT_S > 0
