"""What the RICENetTraining Slicer module does, without Qt: train on a worker thread, plot live.

The widget (``RICENetTraining.py``) collects :class:`TrainingSettings` and
polls; training runs on a :class:`~RICENetLib.background.BackgroundTask`, its
``on_epoch`` rows are queued thread-safely, and the main thread turns them into
a live plot (loss and validation macro F1 per fold) and, at the end, the
per-fold metrics table — MRML only through :mod:`RICENetLib.mrml`.

>>> logic = TrainingLogic(scene)                                       # doctest: +SKIP
>>> task = logic.start(settings)                                       # worker thread
>>> logic.update_plot()                                                # main thread, from a QTimer
>>> table = logic.show_metrics(task.wait().result)                     # doctest: +SKIP
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from RICENetLib import MODALITIES, mrml
from RICENetLib.background import BackgroundTask
from RICENetLib.errors import InputError

from . import check_flip_probability, check_lr_schedule

DEVICES = ("auto", "cpu", "cuda", "mps")
SKULL_STRIP_CHOICES = ("deepbet", "hd-bet", "none")
#: What training needs beyond Slicer and the PyTorch extension (installed on first use, never at import time).
TRAINING_REQUIREMENTS = ("monai>=1.4", "safetensors>=0.4", "nibabel>=5", "matplotlib>=3.7")
CROP_CENTRES = ("brain", "dose")  # RICENetLib.preprocessing.CROP_CENTRES (checked by a test), without importing SimpleITK


@dataclass
class TrainingSettings:
    """The training module's choices (plain values, as the parameter node stores them)."""

    cohort: str = ""
    output: str = ""
    use_postop: bool = True
    use_event: bool = True
    use_dose: bool = True
    n_folds: int = 5
    epochs: int = 800
    seed: int = 0
    device: str = "auto"
    batch_size: int = 4
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"
    input_size: int = 224
    spacing_mm: float = 1.0
    skull_strip: str = "deepbet"
    crop_centre: str = "brain"
    flip_probability: float = 0.0  # mirroring per axis; not in the paper, so off by default
    bf16: bool = False  # bfloat16 autocast: the weights and the bundle stay float32

    @property
    def modalities(self) -> tuple[str, ...]:
        chosen = {"postop": self.use_postop, "event": self.use_event, "dose": self.use_dose}
        return tuple(m for m in MODALITIES if chosen[m])

    def validate(self, *, need_output: bool = True) -> "TrainingSettings":
        if not self.cohort:
            raise InputError("Choose the cohort: a CSV (patient_id,label,postop,event,dose) or a folder of patients.")
        if not Path(self.cohort).exists():
            raise InputError(f"Cohort {self.cohort} does not exist.")
        if need_output and not self.output:
            raise InputError("Choose the output folder for the model bundle.")
        if not self.modalities:
            raise InputError("Tick at least one modality (post-op MRI, event MRI, dose).")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise InputError(f"Unknown device '{self.device}'; use one of {', '.join(DEVICES)} or cuda:N.")
        check_lr_schedule(self.lr_schedule)
        if self.skull_strip not in SKULL_STRIP_CHOICES:
            raise InputError(f"Unknown skull-stripping backend '{self.skull_strip}'; use one of {', '.join(SKULL_STRIP_CHOICES)}.")
        if self.crop_centre not in CROP_CENTRES:
            raise InputError(f"Unknown input-box centre '{self.crop_centre}'; use one of {', '.join(CROP_CENTRES)}.")
        check_flip_probability(self.flip_probability)
        return self

    def training_parameters(self, **overrides: Any):
        """The engine's :class:`~RICENetTrainingLib.training.TrainingParameters` for these settings."""
        from .augmentation import AugmentationParameters
        from .training import TrainingParameters

        values = dict(modalities=self.modalities, n_folds=int(self.n_folds), epochs=int(self.epochs), seed=int(self.seed),
                      device=self.device, batch_size=int(self.batch_size), learning_rate=float(self.learning_rate),
                      lr_schedule=self.lr_schedule,
                      augmentation=AugmentationParameters(flip_probability=float(self.flip_probability)),
                      bf16=bool(self.bf16))
        values.update(overrides)
        return TrainingParameters(**values)

    def preprocessing(self) -> dict[str, Any]:
        """Preprocessing parameters stored in the bundle (the classifier repeats them on new cases)."""
        return {"spacing_mm": float(self.spacing_mm), "input_size": int(self.input_size), "skull_strip": self.skull_strip,
                "crop_centre": self.crop_centre}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainingSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def required_packages(settings: TrainingSettings) -> list[str]:
    """The pip requirements a training run with ``settings`` needs (torch excluded: the PyTorch extension's)."""
    from RICENetLib.slicer_logic import SKULL_STRIP_REQUIREMENTS

    return list(TRAINING_REQUIREMENTS) + list(SKULL_STRIP_REQUIREMENTS.get(settings.skull_strip, ()))


class TrainingLogic:
    """Start, stop, resume training or the ablation; turn epoch rows into plot and table nodes.

    ``train`` and ``ablate`` default to the engine's ``train_ensemble`` and
    ``run_ablation``; ``engine_options`` are passed on to them (tests pass an
    in-memory ``load``, parameter overrides go in ``parameter_overrides``).
    """

    def __init__(self, scene: Any, *, train: Callable[..., Any] | None = None, ablate: Callable[..., Any] | None = None,
                 engine_options: Mapping[str, Any] | None = None, parameter_overrides: Mapping[str, Any] | None = None) -> None:
        self.scene = scene
        self._train = train
        self._ablate = ablate
        self.engine_options = dict(engine_options or {})
        self.parameter_overrides = dict(parameter_overrides or {})
        self._lock = threading.Lock()
        self._history: list[dict[str, Any]] = []
        self._plotted = 0
        self.key = "training"

    # -- epoch rows, written by the worker, read by the main thread ----------
    def _on_epoch(self, fold: int, epoch: int, row: Mapping[str, Any], series: str = "") -> None:
        entry = {"fold": int(fold), "epoch": int(epoch), **{k: v for k, v in row.items() if k not in ("fold", "epoch")}}
        if series:
            entry["series"] = series
        with self._lock:
            self._history.append(entry)

    def history(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._history)

    def update_plot(self, force: bool = False):
        """Refresh the loss/F1 chart if new epochs arrived (main thread); returns the chart node or None."""
        with self._lock:
            rows = list(self._history)
        if not rows or (len(rows) == self._plotted and not force):
            return None
        self._plotted = len(rows)
        series = rows[-1].get("series", "")
        rows = [r for r in rows if r.get("series", "") == series]
        quantities = [q for q in ("train_loss", "val_loss", "val_macro_f1") if any(q in r for r in rows)]
        title = f"RICE-NET training {series}".strip()
        chart, _ = mrml.update_training_plot(self.scene, rows, key=f"{self.key}:{series}", series=quantities, name=title)
        return chart

    # -- runs -------------------------------------------------------------
    def _begin(self, settings: TrainingSettings, kind: str) -> None:
        """Validate, then forget the previous run's curves before a new run starts."""
        settings.validate()
        with self._lock:
            self._history.clear()
        self._plotted = 0
        self.key = f"{kind}:{Path(settings.output).name}"

    def start(self, settings: TrainingSettings, *, resume: bool = False, overwrite: bool = False) -> BackgroundTask:
        """Train the ensemble on a worker thread (``resume`` continues from the checkpoints)."""
        self._begin(settings, "training")
        return BackgroundTask(self._run_training, settings, resume, overwrite, name="RICE-NET training").start()

    def _run_training(self, progress: Any, cancel: Any, settings: TrainingSettings, resume: bool, overwrite: bool) -> Any:
        from RICENetLib.cohort import load_cohort

        train = self._train
        if train is None:
            from .training import train_ensemble as train
        cases = load_cohort(settings.cohort)
        params = settings.training_parameters(**self.parameter_overrides)
        return train(cases, settings.output, params, preprocessing=settings.preprocessing(), resume=resume,
                     overwrite=overwrite, progress=progress, cancel=cancel, on_epoch=self._on_epoch, **self.engine_options)

    def start_ablation(self, settings: TrainingSettings, *, resume: bool = False, overwrite: bool = False) -> BackgroundTask:
        """Train the seven modality combinations on the same folds (one bundle each under the output folder)."""
        self._begin(settings, "ablation")
        return BackgroundTask(self._run_ablation, settings, resume, overwrite, name="RICE-NET ablation").start()

    def _run_ablation(self, progress: Any, cancel: Any, settings: TrainingSettings, resume: bool, overwrite: bool) -> Any:
        from RICENetLib.cohort import load_cohort

        ablate = self._ablate
        if ablate is None:
            from .ablation import run_ablation as ablate
        cases = load_cohort(settings.cohort)
        params = settings.training_parameters(**self.parameter_overrides)

        def on_epoch(combination: Sequence[str], fold: int, epoch: int, row: Mapping[str, Any]) -> None:
            self._on_epoch(fold, epoch, row, series="+".join(combination))

        return ablate(cases, settings.output, params, preprocessing=settings.preprocessing(), resume=resume,
                      overwrite=overwrite, progress=progress, cancel=cancel, on_epoch=on_epoch, **self.engine_options)

    # -- results ------------------------------------------------------------
    def show_metrics(self, result: Any):
        """The per-fold validation metrics as a table node (training), or the ablation table."""
        if isinstance(result, list):  # ablation rows
            rows = []
            for row in result:
                f1 = row.f1
                rows.append({"combination": row.name, "modalities": "+".join(row.modalities),
                             "macro F1 mean": f1.get("mean"), "macro F1 sd": f1.get("sd"),
                             **{f"fold {k}": v for k, v in enumerate(row.fold_f1)}})
            return mrml.update_table_from_rows(self.scene, rows, role="training-metrics", key=self.key,
                                               name="RICE-NET ablation")
        rows = []
        for fold in result.folds:
            rows.append({"fold": fold.fold, "epoch kept": fold.epoch,
                         **{name: value for name, value in fold.metrics.items() if isinstance(value, (int, float))}})
        summary = result.summary
        for statistic in ("mean", "sd"):
            rows.append({"fold": statistic, "epoch kept": None,
                         **{name: values.get(statistic) for name, values in summary.items()}})
        return mrml.update_table_from_rows(self.scene, rows, role="training-metrics", key=self.key,
                                           name="RICE-NET training metrics")

    def show_reliability(self, result: Any):
        """The bundle's out-of-fold reliability diagram (raw and calibrated) as a plot chart, or ``None``.

        ``None`` for an ablation, a run whose bundle is not written yet, or a
        bundle without out-of-fold probabilities.
        """
        bundle = getattr(result, "bundle", None)
        if not bundle:
            return None
        from RICENetLib.bundle import read_header
        from RICENetLib.calibration import reliability_curves

        meta = read_header(bundle)
        calibration = meta.get("calibration")
        if not meta.get("out_of_fold") or not calibration:
            return None
        curves = reliability_curves(meta["out_of_fold"], calibration, meta["class_names"])
        named = {f"raw: ECE {calibration['ece_before']:.3f}, Brier {calibration['brier_before']:.3f}": curves["raw"]}
        if curves["calibrated"] is not None:
            named[f"calibrated (T = {calibration['temperature']:.2f}): ECE {calibration['ece_after']:.3f}, "
                  f"Brier {calibration['brier_after']:.3f}"] = curves["calibrated"]
        chart, _ = mrml.update_reliability_plot(self.scene, named, key=self.key,
                                                name=f"RICE-NET reliability {Path(str(bundle)).name}")
        return chart


def result_message(result: Any) -> str:
    """One line for the status label when training ends."""
    if isinstance(result, list):
        return f"Ablation done: {len(result)} modality combinations trained."
    if getattr(result, "bundle", None):
        f1 = result.summary.get("macro_f1", {})
        mean = f1.get("mean")
        return f"Bundle written to {result.bundle}" + (f" (validation macro F1 {mean:.2f})" if mean is not None else "")
    missing = getattr(result, "missing_folds", [])
    return f"Folds {', '.join(map(str, missing))} still to train; the bundle is written when all folds are done."
