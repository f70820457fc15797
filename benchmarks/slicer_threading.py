"""Benchmark: does the modules' worker thread get its speed under Slicer's GIL policy? (issue 21)

    python benchmarks/slicer_threading.py                    # 32³, 2 rounds, 1 torch thread
    python benchmarks/slicer_threading.py --size 16 --rounds 1 --threads 2 --json figures.json

Slicer's main thread holds the GIL while Qt waits for events (PythonQt without
thread support), so a worker thread runs only while the main thread runs
Python. ``Testing/pythonqt_host`` compiles a C program that embeds this
interpreter the same way and runs the engine's real work on a
``BackgroundTask`` in it, polled every 200 ms as the modules do: a resnet18
forward pass (the classification module), an occlusion map's boxes through
the incremental engine (the classification module's heatmap), a training step
with the paper's augmentation (the training module).

For each it prints the worker's speed inside the host with the modules'
``MainThreadYielder`` on a 0 ms timer and without it, as a percentage of the
same work in a plain interpreter (a separate process) and of the host with
its main thread asleep (``free``, same process, interleaved with the other
phases); ``unloaded`` figures leave out the time the worker waited for a CPU
that other processes held (Linux schedstat), which matters on a shared
machine. Targets: ≥ 90 % with the yielder; the starvation shows without it.
Then the main thread's responsiveness while yielding: the latency of the
host's simulated input events (every 5 ms), the longest gap between two
passes of the 0 ms timer, the longest tick. Target: ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))

from pythonqt_host import measure, missing_toolchain  # noqa: E402

#: Progress reports timed per phase: about 3-10 s of free-running work each at 32³ on one core.
REPORTS = {"inference": 4, "occlusion": 6, "training": 2}


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32, help="input edge in voxels (3 channels)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of free/yield/starved phases")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the worker")
    parser.add_argument("--sleep-ms", type=float, default=2.0, help="the yielder's sleep per tick")
    parser.add_argument("--workloads", default=",".join(REPORTS), help="comma-separated subset of " + ",".join(REPORTS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    reason = missing_toolchain()
    if reason:
        print(f"cannot build the PythonQt-like host: {reason}")
        return 2
    workloads = {name: REPORTS[name] for name in args.workloads.split(",")}
    load = os.getloadavg()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        figures = measure(workloads, folder, size=args.size, threads=args.threads, rounds=args.rounds,
                          sleep_ms=args.sleep_ms, timeout_s=3600)
    took = time.perf_counter() - began
    after = os.getloadavg()
    print(f"input 3x{args.size}^3, {args.threads} torch thread(s), {args.rounds} round(s), yielder sleep "
          f"{args.sleep_ms:g} ms; {os.cpu_count()} CPUs, load average {load[0]:.1f} before, {after[0]:.1f} after; "
          f"{took:.0f} s")
    print("\nWorker speed inside the host as % of the same work free-running, each cell 'of a plain process / of "
          "the host asleep'; unloaded: without run-queue time")
    widths = [10, 12, 20, 20, 20, 20]
    print(_row(["workload", "plain /s", "yield %", "yield % unloaded", "starved %", "starved % unloaded"], widths))
    for name, e in figures.items():
        print(_row([name, f"{e['plain_per_s']:.3g}",
                    f"{e['yield_percent_of_plain']:.0f} / {e['yield_percent']:.0f}",
                    f"{e['yield_unloaded_percent_of_plain']:.0f} / {e['yield_unloaded_percent']:.0f}",
                    f"{e['starved_percent_of_plain']:.1f} / {e['starved_percent']:.1f}",
                    f"{e['starved_unloaded_percent_of_plain']:.1f} / {e['starved_unloaded_percent']:.1f}"], widths))
    print("\nMain thread while yielding (ms): input latency max / p99, longest gap between 0 ms timer passes, "
          "longest tick; % of the time it waited for a CPU that other processes held")
    widths = [10, 22, 14, 14, 16]
    print(_row(["workload", "input max / p99", "0 ms gap", "tick", "run-queue %"], widths))
    for name, e in figures.items():
        y = e["yield"]
        print(_row([name, f"{y['input_latency_ms_max']:.1f} / {y['input_latency_ms_p99']:.1f}",
                    f"{y['zero_timer_gap_ms_max']:.1f}", f"{y['yield_longest_tick_ms']:.1f}",
                    f"{y.get('main_runqueue_percent', float('nan')):.0f}"], widths))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "load": [load, after],
                                         "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
