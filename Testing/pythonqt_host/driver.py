"""Runs workloads on a :class:`BackgroundTask`, inside the PythonQt-like host or in a plain interpreter.

    host driver.py CONFIG_JSON      (inside the C host)
    python driver.py CONFIG_JSON    (a plain interpreter; phases "warmup" and "free" only)

CONFIG_JSON: ``{"workloads": {name: reports}, "phases": [...], "size": 16, "threads": 1, "cap_s": 60,
"cap_factors": {"yield": 3, "starved": 1.5}, "sleep_ms": 2, "out": PATH}`` (``sleep_ms``: the yielder's sleep).

A phase starts a task that repeats the workload's step (:mod:`.workloads`)
and measures how long the worker takes to its N-th progress report (the same
work in every phase); then the task is cancelled and the next phase starts
once the worker thread has ended. The main thread meanwhile:

* ``free`` (and ``warmup``, the same but not reported): sleeps between status
  polls (``time.sleep`` releases the GIL), as any script's main thread waiting
  for a worker; inside the host the poll slot does this, blocking the loop, so
  the worker has the GIL as in a plain interpreter;
* ``yield``: what the Slicer modules do: a 200 ms ``QTimer`` polls the task's
  status and a 0 ms ``QTimer`` calls :meth:`MainThreadYielder.tick`
  (started by ``watch``, stopped by the yielder when the worker has ended);
* ``starved``: the 200 ms poll alone, as the modules did before the yielder.
  Once measured, the yielder lets the cancelled worker reach its next
  progress report, so the next phase starts promptly.

A host phase that has not reached N reports by its ``cap_factors`` × the time
the last ``free`` phase of that workload took (``cap_s`` before any, and for
free phases) is cut there and counts the reports it made (``capped``). Each
result row holds the counted reports and the seconds they took, and inside
the host the loop's stats over the measurement (``pqhost.stats``) and the
yielder's ticks. On Linux it also holds the worker thread's CPU time and the
run-queue time of the worker and of the main thread (runnable while other
processes had the CPUs, from ``/proc/self/task/TID/schedstat``): on a shared
machine, ``seconds - runqueue_s`` is what the phase would have taken alone, so
the GIL's share of a phase does not depend on the neighbours.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pythonqt_host.workloads import build  # noqa: E402
from RICENetLib.background import BackgroundTask  # noqa: E402
from RICENetLib.gil_yield import MainThreadYielder, YieldStats  # noqa: E402

POLL_INTERVAL_MS = 200  # as RICENet.py
FREE = ("free", "warmup")  # a warm-up phase runs free and is not reported: a first worker thread pays for fresh memory


def schedstat(tid: int) -> tuple[float, float] | None:
    """Seconds thread ``tid`` of this process has run on a CPU, and waited for one while runnable (Linux)."""
    try:
        fields = Path(f"/proc/self/task/{tid}/schedstat").read_text().split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


class Worker:
    """The task's work: the step again and again until cancelled, each progress report time-stamped, and the
    thread's CPU accounting at its start and at the ``reports``-th report."""

    def __init__(self, step, reports: int) -> None:
        self.step, self.reports = step, reports
        self.stamps: list[float] = []
        self.tid = 0
        self.sched_start = self.sched_end = None

    def __call__(self, progress, cancel):
        self.tid = threading.get_native_id()
        self.sched_start = schedstat(self.tid)

        def report(fraction: float = 0.0, message: str = "") -> None:
            if len(self.stamps) == self.reports - 1:  # read before the stamp that the main thread waits for
                self.sched_end = schedstat(self.tid)
            self.stamps.append(time.perf_counter())
            progress(fraction, message)

        while True:
            self.step(report)


class Phases:
    """The plan (workload × phase), one at a time; the poll slot moves it on."""

    def __init__(self, config: dict, in_host: bool) -> None:
        self.config = config
        self.plan = [(w, p) for w in config["workloads"] for p in config["phases"]]
        self.steps = {w: build(w, int(config["size"])) for w in config["workloads"]}
        self.free_s: dict[str, float] = {}
        self.results: list[dict] = []
        self.done = False
        self.in_host = in_host
        if in_host:
            import pqhost
            from pythonqt_host.qt_timer import QTimer

            self.pqhost = pqhost
            self.pollTimer = QTimer()
            self.pollTimer.setInterval(POLL_INTERVAL_MS)
            self.pollTimer.connect("timeout()", self.poll)
            self.yieldTimer = QTimer()
            self.yieldTimer.setInterval(0)
            self.yielder = MainThreadYielder(self.yieldTimer, sleep_s=float(config.get("sleep_ms", 2)) / 1000)
            self.yieldTimer.connect("timeout()", self.yielder.tick)

    def next(self) -> None:
        if not self.plan:
            Path(self.config["out"]).write_text(json.dumps(self.results, indent=1))
            self.done = True
            if self.in_host:
                self.pqhost.quit(0)
            return
        self.workload, self.phase = self.plan.pop(0)
        self.reports = int(self.config["workloads"][self.workload])
        free = self.free_s.get(self.workload)
        factor = self.config["cap_factors"].get(self.phase)
        self.cap_s = float(factor) * free if free and factor else float(self.config["cap_s"])
        self.worker = Worker(self.steps[self.workload], self.reports)
        self.measured: dict | None = None
        self.task = BackgroundTask(self.worker, name="pqhost worker")
        if self.in_host:
            self.yielder.stats = YieldStats()
            self.pqhost.stats(True)
        self.main_start = schedstat(threading.get_native_id())
        self.began = time.perf_counter()
        self.task.start()
        if self.in_host:
            if self.phase == "yield":
                self.yielder.watch(self.task)
            # A free phase blocks in its first poll, which comes at once: the loop must not hold the GIL meanwhile.
            self.pollTimer.setInterval(0 if self.phase in FREE else POLL_INTERVAL_MS)
            self.pollTimer.start()

    def poll(self) -> None:
        """The 200 ms slot (inside the host); a failure ends the host, which would otherwise only print it."""
        try:
            if self.phase in FREE:
                while not self._check():
                    time.sleep(POLL_INTERVAL_MS / 1000)  # the GIL is free while the main thread sleeps
            else:
                self._check()
        except BaseException:
            if not self.in_host:
                raise
            traceback.print_exc()
            self.pqhost.quit(5)

    def _check(self) -> bool:
        """Read the status as the widget's _poll does; end the measurement; True when the phase is over."""
        status = self.task.status()
        _ = (status.fraction, status.message)
        if self.measured is None:
            elapsed = time.perf_counter() - self.began
            if len(self.worker.stamps) >= self.reports or elapsed >= self.cap_s:
                self._measure()
                self.task.cancel()
                if self.in_host and not self.yielder.active:
                    self.yielder.watch(self.task)  # wind the cancelled worker down promptly
        if self.measured is None or not status.finished or self.task.thread_alive:
            return False
        if status.state not in ("cancelled", "done"):
            raise RuntimeError(f"{self.workload}: the worker failed:\n{status.traceback}")
        if self.phase != "warmup":
            self.results.append(self.measured)
        if self.in_host:
            self.pollTimer.stop()
        self.next()
        return True

    def _measure(self) -> None:
        stamps = [t - self.began for t in self.worker.stamps]
        end = self.worker.sched_end
        if len(stamps) >= self.reports and stamps[self.reports - 1] <= self.cap_s:
            counted, seconds, capped = self.reports, stamps[self.reports - 1], False
        else:
            counted, seconds, capped = sum(1 for t in stamps if t <= self.cap_s), self.cap_s, True
            end = schedstat(self.worker.tid)
        if self.phase == "free":
            self.free_s[self.workload] = seconds
        row = {"workload": self.workload, "phase": self.phase, "reports": counted, "seconds": seconds,
               "capped": capped}
        if self.worker.sched_start and end:
            row["cpu_s"] = end[0] - self.worker.sched_start[0]
            row["runqueue_s"] = end[1] - self.worker.sched_start[1]  # runnable but other processes had the CPUs
        main_end = schedstat(threading.get_native_id())
        if self.main_start and main_end:
            row["main_runqueue_s"] = main_end[1] - self.main_start[1]  # the main thread waiting for a CPU
        if self.in_host and self.phase not in FREE:
            row["loop"] = self.pqhost.stats()
            row["yield_ticks"] = self.yielder.stats.ticks
            row["yield_longest_tick_ms"] = 1e3 * self.yielder.stats.longest_tick_s
        self.measured = row


def main(config: dict) -> None:
    torch.set_num_threads(int(config.get("threads", 1)))
    in_host = "pqhost" in sys.builtin_module_names
    if not in_host and not set(config["phases"]) <= set(FREE):
        raise SystemExit(f"outside the host only the phases {FREE} exist")
    phases = Phases(config, in_host)
    phases.next()
    if in_host:
        return  # the C loop takes over when this script returns, as Slicer's event loop does
    while not phases.done:
        phases.poll()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
