"""Drive the measurement from an ordinary process: the workloads inside the host, and in a plain interpreter.

>>> report = measure({"inference": 8}, folder=tmp, size=16)                       # doctest: +SKIP
>>> report["inference"]["yield_percent"], report["inference"]["starved_percent"]   # doctest: +SKIP
(97.1, 2.3)

Inside the host each round runs the phases free, yield and starved (the next
round in reverse order, so a change in the machine's load weighs on all
three alike); ``*_percent`` compare a phase with the host's own ``free``
phase, ``*_percent_of_plain`` with the same work in a plain interpreter (a
separate process, run after the host). ``*_unloaded_*`` figures leave out the
time the worker waited for a CPU that other processes held (Linux
schedstat), so that a busy shared machine does not pass for the GIL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping

from .build import build_host, host_environment

DRIVER = Path(__file__).with_name("driver.py")
PHASES = ("free", "yield", "starved")
CAP_FACTORS = {"yield": 3.0, "starved": 1.5}
LOOP_MAXIMA = ("input_latency_ms_max", "input_latency_ms_p99", "zero_timer_gap_ms_max", "slot_ms_max",
               "timer_late_ms_max")


def _run(command: list[str], config: dict, env: dict[str, str], timeout_s: float) -> list[dict]:
    out = Path(config["out"])
    out.unlink(missing_ok=True)
    done = subprocess.run([*command, str(DRIVER), json.dumps(config)], env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"{command[0]} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return json.loads(out.read_text())


def _rate(rows: list[dict], unloaded: bool = False) -> float:
    """Reports per second over ``rows``; ``unloaded``: not counting the worker's run-queue time (None if unknown)."""
    if unloaded and not all("runqueue_s" in r for r in rows):
        return float("nan")
    seconds = sum(r["seconds"] - (r["runqueue_s"] if unloaded else 0.0) for r in rows)
    return sum(r["reports"] for r in rows) / seconds if seconds > 0 else 0.0


def summarise(hosted: list[dict], plain: list[dict] | None = None) -> dict:
    """Per workload: reports/s per phase (all rounds together), the percentages, and the loop's worst figures."""
    report: dict[str, dict] = {}
    for name in dict.fromkeys(r["workload"] for r in hosted):
        rows = {phase: [r for r in hosted if r["workload"] == name and r["phase"] == phase] for phase in PHASES}
        entry: dict = {"rounds": len(rows["free"])}
        for phase in PHASES:
            entry[f"{phase}_per_s"] = _rate(rows[phase])
            entry[f"{phase}_unloaded_per_s"] = _rate(rows[phase], unloaded=True)
            entry[f"{phase}_runqueue_s"] = sum(r.get("runqueue_s", 0.0) for r in rows[phase])
        if plain is not None:
            plain_rows = [r for r in plain if r["workload"] == name]
            entry["plain_per_s"] = _rate(plain_rows)
            entry["plain_unloaded_per_s"] = _rate(plain_rows, unloaded=True)
        for phase in ("yield", "starved"):
            entry[f"{phase}_capped"] = any(r["capped"] for r in rows[phase])
            for kind in ("", "unloaded_"):
                entry[f"{phase}_{kind}percent"] = 100.0 * entry[f"{phase}_{kind}per_s"] / entry[f"free_{kind}per_s"]
                if plain is not None:
                    entry[f"{phase}_{kind}percent_of_plain"] = \
                        100.0 * entry[f"{phase}_{kind}per_s"] / entry[f"plain_{kind}per_s"]
            entry[phase] = {key: max(r["loop"][key] for r in rows[phase]) for key in LOOP_MAXIMA}
            entry[phase]["yield_longest_tick_ms"] = max(r["yield_longest_tick_ms"] for r in rows[phase])
            if all("main_runqueue_s" in r for r in rows[phase]):
                entry[phase]["main_runqueue_percent"] = 100.0 * sum(r["main_runqueue_s"] for r in rows[phase]) / \
                    sum(r["seconds"] for r in rows[phase])
        report[name] = entry
    return report


def measure(workloads: Mapping[str, int], folder: str | os.PathLike, *, size: int = 16, threads: int = 1,
            rounds: int = 2, plain: bool = True, cap_factors: Mapping[str, float] = CAP_FACTORS, sleep_ms: float = 2.0,
            timeout_s: float = 600) -> dict:
    """Run ``workloads`` (name -> progress reports per phase) in the host (and a plain interpreter); see
    :func:`summarise`. A host phase is cut at its ``cap_factors`` × the time of the free phase before it: the
    yield phase late enough that it is cut only when far too slow (its reports are not evenly spaced), the starved
    phase early (it would take minutes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    host = build_host(folder)
    env = host_environment()
    env["OMP_NUM_THREADS"] = str(threads)
    env["PQHOST_TIMEOUT_S"] = str(timeout_s)
    order = ["warmup"] + [phase for r in range(rounds) for phase in (PHASES if r % 2 == 0 else PHASES[::-1])]
    base = {"workloads": dict(workloads), "size": size, "threads": threads, "cap_s": timeout_s / 4,
            "cap_factors": dict(cap_factors), "sleep_ms": sleep_ms}
    hosted = _run([str(host)], {**base, "phases": order, "out": str(folder / "host.json")}, env, timeout_s)
    plain_rows = None
    if plain:
        config = {**base, "phases": ["warmup"] + ["free"] * rounds, "out": str(folder / "plain.json")}
        plain_rows = _run([sys.executable], config, env, timeout_s)
    return summarise(hosted, plain_rows)
