"""The modules' worker thread under Slicer's GIL policy, reproduced by a C host (``pythonqt_host/host.c``).

Slicer's main thread holds the GIL while Qt waits for events (PythonQt without
thread support), so a worker thread runs only while the main thread runs
Python. The host compiled here embeds this interpreter the same way; inside it
the engine's real work (a resnet18 forward pass, a batch of occlusion boxes,
a training step) runs on a :class:`BackgroundTask`, polled every 200 ms as
the widgets do, with the modules' :class:`MainThreadYielder` on a 0 ms timer
(phase ``yield``) or without it (``starved``), against the same work while the
main thread sleeps (``free``). Inputs are 8³ to keep this short; the 32³
figures are ``benchmarks/slicer_threading.py``.

Bounds are loose for a shared 2-core machine: the rates leave out the time the
worker waited for a CPU held by other processes (Linux schedstat), and the
share asked of the yielder (60 %) is well below what it reaches alone (~100 %).
"""

from __future__ import annotations

import math
import sys

import pytest

from pythonqt_host import measure, missing_toolchain

WORKLOADS = {"inference": 10, "occlusion": 6, "training": 2}  # progress reports timed per phase
MIN_YIELD_PERCENT = 60.0
MAX_STARVED_PERCENT = 20.0
MAX_INPUT_LATENCY_P99_MS = 50.0
MAX_GAP_MS = 100.0  # the worst single pass on a shared machine; the target (50 ms) is for p99 here

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or missing_toolchain() is not None,
    reason=f"the PythonQt-like host needs Linux, a C compiler and this Python's headers and libpython: "
           f"{missing_toolchain() if sys.platform == 'linux' else sys.platform}")


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    return measure(WORKLOADS, tmp_path_factory.mktemp("pqhost"), size=8, rounds=1, plain=False, timeout_s=300)


def _percent(entry: dict, phase: str) -> float:
    unloaded = entry[f"{phase}_unloaded_percent"]
    return entry[f"{phase}_percent"] if math.isnan(unloaded) else unloaded


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_with_the_yielder_the_worker_runs_close_to_free(figures, workload):
    entry = figures[workload]
    assert _percent(entry, "yield") >= MIN_YIELD_PERCENT, entry


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_without_the_yielder_the_worker_starves(figures, workload):
    entry = figures[workload]
    assert entry["starved_capped"], entry  # it did not get its work done in 1.5 × the free time
    assert _percent(entry, "starved") <= MAX_STARVED_PERCENT, entry


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_the_main_thread_stays_responsive_while_yielding(figures, workload):
    loop = figures[workload]["yield"]
    assert loop["input_latency_ms_p99"] <= MAX_INPUT_LATENCY_P99_MS, loop
    assert loop["input_latency_ms_max"] <= MAX_GAP_MS, loop
    assert loop["zero_timer_gap_ms_max"] <= MAX_GAP_MS, loop
    assert 0 < loop["yield_longest_tick_ms"] <= MAX_GAP_MS, loop
