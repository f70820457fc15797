"""Train the folds in several processes at once, for CPUs.

A small 3D network keeps two CPU cores only partly busy: on the demo's
half-width ResNet-18 at 40³ one process with two threads trains an epoch in
2.8 s, two one-thread processes side by side one each in 4.1 s, so the pair
does 1.4× the work (2-core AMD EPYC, AVX2). Each process here trains a share
of the folds (``--fold``-style, through :func:`train_ensemble`), and the
parent writes the bundle once every fold is done, exactly as one process
would: the same folds, seeds and checkpoints, so ``resume`` works the same.
Thread count and process change only the order of floating-point sums, so
the weights agree with a one-process run to rounding, not bit for bit.

Processes are started with ``spawn`` (no forked OpenMP or torch state); the
case loader must therefore be picklable (:class:`~.dataset.PipelineLoader`
is). On a GPU or under ``torchrun`` this is refused: there one process per
device is the rule.
"""

from __future__ import annotations

import os
import queue as queue_module
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from RICENetLib.cohort import Case
from RICENetLib.errors import Cancelled, InputError
from RICENetLib.progress import as_progress

from .dataset import CaseLoader, load_cases
from .training import (CHECKPOINT_NAME, LOADING_SHARE, TrainingParameters, TrainingResult, check_output_folder,
                       default_work_dir, fold_dir, resolve_device, train_ensemble)


def fold_groups(folds: Sequence[int], processes: int) -> list[list[int]]:
    """Deal the folds round-robin: ``[0, 1, 2, 3, 4]`` over 2 → ``[[0, 2, 4], [1, 3]]``."""
    return [list(folds[i::processes]) for i in range(processes) if folds[i::processes]]


def check_processes(processes: int, params: TrainingParameters) -> None:
    """Refuse what cannot run as parallel CPU processes, naming the option."""
    if not isinstance(processes, int) or processes < 1:
        raise InputError(f"--processes must be a whole number ≥ 1 (got {processes!r}).")
    if processes == 1:
        return
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise InputError("--processes is for one machine's CPU; under torchrun each process already trains "
                         "data-parallel. Leave --processes out.")
    device = resolve_device(params.device)
    if device.type != "cpu":
        raise InputError(f"--processes {processes} trains folds side by side on the CPU; the training device is "
                         f"{device}. Use --device cpu, or leave --processes out on a GPU.")


def train_in_processes(
    cases: Sequence[Case],
    out: str | os.PathLike,
    params: TrainingParameters,
    processes: int,
    *,
    load: CaseLoader,
    preprocessing: Mapping[str, Any] | None = None,
    folds_file: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    threads: int | None = None,
    progress=None,
    cancel=None,
) -> TrainingResult:
    """:func:`train_ensemble` with the folds dealt over ``processes`` CPU processes of ``threads`` threads each.

    ``threads`` defaults to the cores divided by the processes (at least 1)
    and stays fixed, so that a run's rounding does not depend on which
    process ends first. More processes than cores is allowed and can pay:
    5 folds over 2 processes leave one core idle for the fifth fold, over 3
    one-thread processes (on 2 cores) they do not.
    The output folder is checked, and the folds are made, before any process
    starts; a failing or cancelled process stops the others, and what each
    fold saved stays resumable.
    """
    import multiprocessing

    from .folds import check_cohort, folds_for_cohort

    params.validate()
    check_processes(processes, params)
    report = as_progress(progress, cancel)
    if processes == 1 or len(params.fold_indices()) == 1:
        return train_ensemble(cases, out, params, load=load, preprocessing=preprocessing, folds_file=folds_file,
                              work_dir=work_dir, resume=resume, overwrite=overwrite, progress=report)
    check_cohort(cases, params.n_folds)
    out = Path(out)
    work = Path(work_dir) if work_dir is not None else default_work_dir(out)
    check_output_folder(out, resume, overwrite)
    folds_path = Path(folds_file) if folds_file else work / "folds.json"
    folds_for_cohort(cases, folds_path, params.n_folds, params.seed)  # made once here, read by every process
    chosen = params.fold_indices()
    processes = min(processes, len(chosen))
    if not (resume or overwrite):  # refused now, not after the other processes have trained for minutes
        for k in chosen:
            if (fold_dir(work, k) / CHECKPOINT_NAME).exists():
                raise InputError(f"{fold_dir(work, k) / CHECKPOINT_NAME} holds an earlier run of fold {k}; resume "
                                 "it, or choose another output or overwrite it.")
    groups = fold_groups(chosen, processes)
    threads = threads or max(1, (os.cpu_count() or 1) // processes)

    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    workers = []
    for number, group in enumerate(groups):
        job = dict(cases=list(cases), out=str(out), params=replace(params, folds=tuple(group)), load=load,
                   preprocessing=dict(preprocessing or {}), folds_file=str(folds_path), work_dir=str(work),
                   resume=resume, overwrite=overwrite, threads=threads,
                   start=number * len(cases) // len(groups))
        worker = context.Process(target=_train_group, args=(number, job, messages), daemon=True)
        worker.start()
        workers.append(worker)
    _follow(workers, messages, groups, report.sub(0.0, 0.95))

    # Every fold is finished: pick them up from their checkpoints and write the bundle, as the last --fold job does.
    first = replace(params, folds=(chosen[0],))
    return train_ensemble(cases, out, first, load=load, preprocessing=preprocessing, folds_file=folds_path,
                          work_dir=work, resume=True, progress=report.sub(0.95, 1.0))


def _follow(workers: list, messages: Any, groups: list[list[int]], report) -> None:
    """Show the processes' mean progress until all end; stop them all at the first error or on cancel."""
    fractions = [0.0] * len(workers)
    texts = [""] * len(workers)
    done: set[int] = set()
    try:
        while len(done) < len(workers):
            report.check()
            try:
                number, kind, value = messages.get(timeout=0.5)
            except queue_module.Empty:
                dead = [i for i, w in enumerate(workers) if i not in done and not w.is_alive()]
                if dead:
                    time.sleep(1.0)  # a last message may still be in the pipe
                    if messages.empty():
                        raise InputError(f"The training process for folds {', '.join(str(k + 1) for k in groups[dead[0]])} "
                                         f"stopped without a word (exit code {workers[dead[0]].exitcode}); the folds it "
                                         "finished are kept: run again with resume to continue.")
                continue
            if kind == "progress":
                fractions[number], texts[number] = value
                report(sum(fractions) / len(fractions), " · ".join(t for t in texts if t))
            elif kind == "done":
                done.add(number)
                fractions[number] = 1.0
            else:  # "error": (class name, message)
                name, text = value
                if name == "Cancelled":
                    raise Cancelled()
                raise InputError(text if name in ("InputError", "OutputError") else
                                 f"The training process for folds {', '.join(str(k + 1) for k in groups[number])} "
                                 f"failed: {name}: {text}")
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()


def _train_group(number: int, job: dict[str, Any], messages: Any) -> None:
    """One process: its share of the cases into the cache (starting at its own offset), then its folds."""
    import torch

    torch.set_num_threads(job["threads"])

    def say(fraction: float, text: str) -> None:
        messages.put((number, "progress", (float(fraction), text)))

    try:
        cases, load, start = job["cases"], job["load"], job["start"]
        # The processes walk the cohort from different places: each case is prepared once, then read from the cache.
        for step, case in enumerate(cases[start:] + cases[:start]):
            say(LOADING_SHARE * step / len(cases), f"preparing {case.patient_id}")
            load_cases([case], load)  # its errors name the patient
        train_ensemble(cases, job["out"], job["params"], load=load, preprocessing=job["preprocessing"],
                       folds_file=job["folds_file"], work_dir=job["work_dir"], resume=job["resume"],
                       overwrite=job["overwrite"], assemble=False,
                       progress=lambda fraction, text: say(LOADING_SHARE + (1 - LOADING_SHARE) * fraction, text))
        messages.put((number, "done", None))
    except BaseException as error:  # noqa: BLE001 - every failure is reported to the parent, which raises it
        messages.put((number, "error", (type(error).__name__, str(error))))

