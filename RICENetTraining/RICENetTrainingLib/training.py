"""The training loop: the paper's 5-fold protocol, resumable, on one device or data-parallel.

Per fold: MONAI ``resnet18`` over the selected channels, Adam, cross-entropy,
a ``WeightedRandomSampler`` that draws both classes equally often,
augmentation (:mod:`.augmentation`), validation macro F1 after every epoch,
and an atomic checkpoint after every epoch.

**Which weights are kept.** By default (``selection="best_f1"``) the epoch
with the highest validation macro F1; ties go to the lower validation loss,
then to the earlier epoch. That is how a paper-style cross-validation reports
its best fold models, and it means the reported validation F1 is optimistic
(it chose the epoch on the same patients); the independent check is a test
set. ``selection="last"`` keeps the final epoch instead.

**Reproducibility and resuming.** Every random choice is a pure function of
``(seed, fold, epoch, position)``: the network's initial weights, the
sampler's draw of each epoch (a ``torch.Generator`` seeded per epoch) and
every sample's augmentation (a seed per position in the epoch). A checkpoint
therefore needs only the model, the optimiser, the epoch and the history (it
also stores the global RNG states and the sampler's settings), and a run
killed at any moment resumes from the last finished epoch and ends with the
same weights as one that never stopped. On a CPU that equality is exact; on a
GPU it holds up to the non-determinism of some CUDA kernels.

**Epoch length.** An epoch draws ``ceil(n / global batch)`` full global
batches (n = training patients; global batch = batch size × processes), so
every step sees the same number of samples and N DDP processes with batch b
walk exactly the path of one process with batch N·b.

>>> result = train_ensemble(cases, "models/ricenet", TrainingParameters(epochs=2),
...                         load=my_loader)                          # doctest: +SKIP
>>> result.bundle, result.summary["macro_f1"]                        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch

from RICENetLib import CLASS_NAMES, MODALITIES
from RICENetLib.atomic import write_text
from RICENetLib.cohort import Case
from RICENetLib.errors import InputError, OutputError, reject_unknown_keys
from RICENetLib.metrics import classification_metrics, mean_sd
from RICENetLib.progress import Progress, as_progress

from . import check_flip_probability, check_lr_schedule
from .augmentation import AugmentationParameters, Augmenter
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .dataset import CaseLoader, CaseSamples, CaseTensors, load_cases, pipeline_loader
from .ddp import DistContext, unwrap, wrap
from .folds import Folds, check_cohort, folds_for_cohort

#: ``on_epoch(fold, epoch, row)`` is called after every epoch with that epoch's history row.
EpochCallback = Callable[[int, int, dict[str, Any]], None]

CHECKPOINT_NAME = "checkpoint.safetensors"
#: The share of the progress that loading (preprocessing) the cohort takes before the training.
LOADING_SHARE = 0.05
LOG_COLUMNS = ("fold", "epoch", "learning_rate", "train_loss", "train_macro_f1", "val_loss", "val_macro_f1", "val_accuracy",
               "val_balanced_accuracy", "val_auc", "seconds", "kept")


@dataclass
class TrainingParameters:
    """Everything that decides how a model is trained (not what data it sees)."""

    modalities: tuple[str, ...] = MODALITIES
    n_folds: int = 5
    folds: Optional[tuple[int, ...]] = None       # the folds to train now; None = all
    epochs: int = 800
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"                  # "constant", or "cosine": decays to 0 over the epochs
    weight_decay: float = 0.0
    batch_size: int = 4
    seed: int = 0
    device: str = "auto"                           # auto, cpu, cuda, cuda:1, mps
    augment: bool = True
    augmentation: AugmentationParameters = field(default_factory=AugmentationParameters)
    augment_on: str = "device"                     # "device": after the batch reaches the device; "cpu": in the loader
    num_workers: int = 0                           # data-loader processes (useful with augment_on="cpu")
    bf16: bool = False                             # bfloat16 autocast
    channels_last: bool = False                    # channels-last-3d memory format
    selection: str = "best_f1"                     # "best_f1" or "last"
    architecture: Optional[dict[str, Any]] = None  # None = RICENetLib.model.default_architecture

    def validate(self) -> None:
        """Refuse unusable settings, naming the parameter, before any data is touched."""
        if not self.modalities or any(m not in MODALITIES for m in self.modalities) or len(set(self.modalities)) != len(self.modalities):
            raise InputError(f"Modalities {','.join(self.modalities) or '(none)'}: choose one or more of "
                             f"{', '.join(MODALITIES)}, each once.")
        self.modalities = tuple(m for m in MODALITIES if m in self.modalities)
        for name, value, low in (("epochs", self.epochs, 1), ("batch size", self.batch_size, 1),
                                 ("number of folds", self.n_folds, 2), ("data-loader workers", self.num_workers, 0)):
            if not isinstance(value, int) or value < low:
                raise InputError(f"The {name} must be an integer ≥ {low} (got {value!r}).")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise InputError(f"The learning rate must be a positive number (got {self.learning_rate!r}).")
        if self.weight_decay < 0:
            raise InputError(f"The weight decay must not be negative (got {self.weight_decay!r}).")
        if self.folds is not None:
            bad = [k for k in self.folds if not 0 <= k < self.n_folds]
            if bad or not self.folds:
                raise InputError(f"Fold {bad[0] if bad else '(none)'} does not exist; with {self.n_folds} folds "
                                 f"choose from 0 to {self.n_folds - 1}.")
        check_flip_probability(self.augmentation.flip_probability)
        check_lr_schedule(self.lr_schedule)
        if self.selection not in ("best_f1", "last"):
            raise InputError(f"Unknown weight selection '{self.selection}'; use best_f1 or last.")
        if self.augment_on not in ("device", "cpu"):
            raise InputError(f"Unknown augmentation place '{self.augment_on}'; use device or cpu.")
        architecture = self.network_architecture()
        if architecture.get("n_input_channels") != len(self.modalities):
            raise InputError(f"The architecture takes {architecture.get('n_input_channels')} input channel(s) but "
                             f"{len(self.modalities)} modalities are selected.")

    def network_architecture(self) -> dict[str, Any]:
        from RICENetLib.model import default_architecture

        if self.architecture is None:
            return default_architecture(len(self.modalities), num_classes=len(CLASS_NAMES))
        return dict(self.architecture)

    def learning_rate_at(self, epoch: int) -> float:
        """The rate for 0-based ``epoch``: a function of the epoch alone, so a resumed run needs no scheduler state.

        ``cosine`` follows half a cosine from the set rate to zero over
        ``epochs``; raising ``epochs`` when resuming stretches the rest of the curve.
        """
        if self.lr_schedule == "cosine":
            return self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
        return self.learning_rate

    def fold_indices(self) -> list[int]:
        return sorted(set(self.folds)) if self.folds is not None else list(range(self.n_folds))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["modalities"] = list(self.modalities)
        data["folds"] = list(self.folds) if self.folds is not None else None
        data["augmentation"] = self.augmentation.to_dict()
        data["architecture"] = self.network_architecture()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainingParameters":
        reject_unknown_keys(cls, data, "training parameter")
        values = dict(data)
        if "modalities" in values:
            values["modalities"] = tuple(values["modalities"])
        if values.get("folds") is not None:
            values["folds"] = tuple(values["folds"])
        if isinstance(values.get("augmentation"), Mapping):
            values["augmentation"] = AugmentationParameters.from_dict(dict(values["augmentation"]))
        return cls(**values)


@dataclass
class FoldResult:
    """A finished fold: the kept weights, the epoch they come from and its validation metrics."""

    fold: int
    epoch: int
    metrics: dict[str, float]
    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    train_patients: list[str]
    validation_patients: list[str]
    #: The kept epoch's probabilities of every validation patient: ``{patient_id, label, p, fold}``
    #: (the bundle's ``out_of_fold``); ``None`` for a fold checkpointed by an earlier version.
    out_of_fold: list[dict[str, Any]] | None = None


@dataclass
class TrainingResult:
    """What :func:`train_ensemble` did: the bundle (``None`` while folds are missing) and the folds."""

    bundle: Optional[Path]
    folds: list[FoldResult]
    missing_folds: list[int]
    work_dir: Path

    @property
    def summary(self) -> dict[str, dict[str, Any]]:
        names = ("macro_f1", "accuracy", "balanced_accuracy", "auc", "loss")
        return {name: mean_sd([f.metrics.get(name) for f in self.folds]) for name in names}


def resolve_device(request: str) -> torch.device:
    """``auto`` is the first CUDA GPU when there is one, else the CPU (training never picks MPS by itself)."""
    from RICENetLib.inference import select_device

    return select_device(request, auto_mps=False)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (stable across runs, machines and Python versions)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def epoch_order(labels: Sequence[int], n_samples: int, seed: int, fold: int, epoch: int) -> list[int]:
    """This epoch's draw of training positions: class-balanced, with replacement, seeded by ``(seed, fold, epoch)``."""
    from torch.utils.data import WeightedRandomSampler

    counts = torch.bincount(torch.as_tensor(labels), minlength=len(CLASS_NAMES)).double()
    weights = 1.0 / counts[torch.as_tensor(labels)]
    generator = torch.Generator().manual_seed(derive_seed(seed, fold, epoch, "sampler"))
    return list(WeightedRandomSampler(weights, n_samples, replacement=True, generator=generator))


def rank_batches(keys: Sequence[Any], batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[Any]]:
    """Process ``rank``'s batches: global batch ``s`` is ``keys[s·N·b : (s+1)·N·b]`` and rank r takes its r-th slice."""
    step = batch_size * world_size
    return [list(keys[s + rank * batch_size: s + (rank + 1) * batch_size]) for s in range(0, len(keys), step)]


def _fingerprint(params: TrainingParameters, fold: int, train_ids: Sequence[str], val_ids: Sequence[str],
                 shape: Sequence[int], world_size: int) -> dict[str, Any]:
    """The settings a checkpoint must share with the run that resumes it (epochs and device may change)."""
    return {
        "fold": fold, "modalities": list(params.modalities), "architecture": params.network_architecture(),
        "learning_rate": params.learning_rate, "lr_schedule": params.lr_schedule, "weight_decay": params.weight_decay, "batch_size": params.batch_size,
        "processes": world_size, "seed": params.seed, "augment": params.augment,
        "augmentation": params.augmentation.to_dict() if params.augment else None, "bf16": params.bf16,
        "channels_last": params.channels_last, "selection": params.selection, "input_shape": list(shape),
        "train_patients": list(train_ids), "validation_patients": list(val_ids),
    }


def fold_dir(work_dir: Path, fold: int) -> Path:
    return Path(work_dir) / f"fold{fold}"


class _FoldTrainer:
    """One fold's model, optimiser, data and bookkeeping; :meth:`run` trains the remaining epochs."""

    def __init__(self, data: CaseTensors, folds: Folds, fold: int, params: TrainingParameters, work_dir: Path,
                 context: DistContext, resume: bool) -> None:
        from RICENetLib.model import build_network

        self.data, self.fold, self.params, self.context = data, fold, params, context
        self.device = context.device
        self.dir = fold_dir(work_dir, fold)
        self.train_ids, self.val_ids = folds.train_ids(fold), folds.validation_ids(fold)
        self.train_index, self.val_index = data.indices(self.train_ids), data.indices(self.val_ids)
        self.channels = data.channels(params.modalities)
        self.fingerprint = _fingerprint(params, fold, self.train_ids, self.val_ids, data.shape, context.world_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(params.seed, fold, "init"))
            model = build_network(params.network_architecture())
        self.memory_format = torch.channels_last_3d if params.channels_last else torch.contiguous_format
        self.model = wrap(model.to(self.device, memory_format=self.memory_format), context)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=params.learning_rate,
                                          weight_decay=params.weight_decay)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": None, "macro_f1": -1.0, "loss": math.inf, "state": None}
        augmenter = Augmenter(params.modalities, params.augmentation) if params.augment else None
        self.device_augment = augmenter if params.augment_on == "device" else None
        self.samples = CaseSamples(data, self.channels, augmenter if params.augment_on == "cpu" else None)
        self.checkpoint = self.dir / CHECKPOINT_NAME
        if resume and context.is_main:
            # A run killed while saving leaves its half-written temporary file (hundreds of MB) behind.
            for stale in self.dir.glob(f".{self.checkpoint.stem}.*.tmp{self.checkpoint.suffix}"):
                stale.unlink(missing_ok=True)
        if self.checkpoint.exists():
            if not resume:
                raise InputError(f"{self.checkpoint} holds an earlier run of fold {fold}; resume it, or choose "
                                 "another output (or overwrite) to start afresh.")
            self._restore(load_checkpoint(self.checkpoint))

    # -- checkpoints ---------------------------------------------------------------------------------------
    def _restore(self, state: dict[str, Any]) -> None:
        _check_fingerprint(state["fingerprint"], self.fingerprint, self.checkpoint)
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.history, self.best = int(state["epoch"]), list(state["history"]), dict(state["best"])
        if self.best["epoch"] == self.epoch and self.best["state"] is None:
            self.best["state"] = _cpu_copy(unwrap(self.model).state_dict())
        set_rng_state(state["rng"])

    def _save(self) -> None:
        best = dict(self.best)
        if best["epoch"] == self.epoch:
            best["state"] = None  # the same tensors as "model": not stored twice
        state = {
            "fold": self.fold, "epoch": self.epoch, "fingerprint": self.fingerprint,
            "model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
            "history": self.history, "best": best, "rng": rng_state(),
            "sampler": {"kind": "WeightedRandomSampler", "replacement": True,
                        "samples_per_epoch": self._samples_per_epoch(),
                        "generator_seed": "derive_seed(seed, fold, epoch, 'sampler')"},
        }
        try:
            save_checkpoint(self.checkpoint, state)
        except OutputError as error:
            kept = (f"The checkpoint of epoch {self.epoch - 1} is kept; make room and run again with resume "
                    "to continue from it." if self.checkpoint.exists() else "No epoch of this fold was saved.")
            raise OutputError(f"Fold {self.fold}, epoch {self.epoch}: {error} {kept}") from None
        write_text(self.dir / "log.csv", history_csv(self.history))

    # -- epochs ----------------------------------------------------------------------------------------------
    def _samples_per_epoch(self) -> int:
        global_batch = self.params.batch_size * self.context.world_size
        return math.ceil(len(self.train_index) / global_batch) * global_batch

    def _batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """This rank's batches of ``(case index, augmentation seed)``."""
        p = self.params
        labels = [self.data.labels[i] for i in self.train_index]
        order = epoch_order(labels, self._samples_per_epoch(), p.seed, self.fold, epoch)
        keys = [(self.train_index[o], derive_seed(p.seed, self.fold, epoch, position))
                for position, o in enumerate(order)]
        return rank_batches(keys, p.batch_size, self.context.rank, self.context.world_size)

    def _loader(self, batches: list[list[tuple[int, int]]]) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.samples, batch_sampler=batches, num_workers=self.params.num_workers,
                                           pin_memory=self.device.type == "cuda")

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.params.bf16)

    def _train_epoch(self, epoch: int, report: Progress) -> dict[str, float]:
        self.model.train()
        batches = self._batches(epoch)
        classes = len(CLASS_NAMES)
        # Accumulated on the device: reading the loss back every step would stall a GPU.
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        confusion = torch.zeros(classes * classes, dtype=torch.float64, device=self.device)
        for number, (images, labels, seeds) in enumerate(self._loader(batches)):
            report(number / len(batches), f"epoch {epoch + 1}: batch {number + 1}/{len(batches)}")
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if self.device_augment is not None:
                images = self.device_augment.batch(images, seeds.tolist())
            images = images.contiguous(memory_format=self.memory_format)
            with self._autocast():
                logits = self.model(images)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach().double() * len(labels)
            confusion += torch.bincount(labels * classes + logits.detach().argmax(dim=1), minlength=classes ** 2)
        totals = self.context.all_reduce_sum(torch.cat([loss_sum.view(1), confusion]).cpu())
        return {"train_loss": float(totals[0] / totals[1:].sum()),
                "train_macro_f1": _macro_f1_from_confusion(totals[1:].view(classes, classes))}

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        network = unwrap(self.model)
        self.context.broadcast_buffers(network)
        network.eval()
        n = len(self.val_index)
        probabilities = torch.zeros(n, len(CLASS_NAMES), dtype=torch.float64)
        losses = torch.zeros(n, dtype=torch.float64)
        mine = list(range(self.context.rank, n, self.context.world_size))
        for start in range(0, len(mine), self.params.batch_size):
            rows = mine[start:start + self.params.batch_size]
            images = torch.stack([self.samples.image(self.val_index[r]) for r in rows])
            images = images.to(self.device).contiguous(memory_format=self.memory_format)
            labels = torch.as_tensor([self.data.labels[self.val_index[r]] for r in rows], device=self.device)
            with self._autocast():
                logits = network(images).float()
            probabilities[rows] = torch.softmax(logits, dim=1).double().cpu()
            losses[rows] = torch.nn.functional.cross_entropy(logits, labels, reduction="none").double().cpu()
        probabilities = self.context.all_reduce_sum(probabilities)
        losses = self.context.all_reduce_sum(losses)
        truth = [self.data.labels[i] for i in self.val_index]
        metrics = classification_metrics(truth, probabilities.numpy(), loss=float(losses.mean()))
        # Kept beside the metrics: the kept epoch's rows become the bundle's out-of-fold probabilities.
        self._last_probabilities = probabilities.tolist()
        return {f"val_{k}": v for k, v in metrics.items()}

    def run(self, report: Progress, on_epoch: EpochCallback | None) -> FoldResult:
        p = self.params
        start = self.epoch
        for epoch in range(start, p.epochs):
            began = time.perf_counter()
            epoch_report = report.sub((epoch - start) / max(p.epochs - start, 1), (epoch + 1 - start) / max(p.epochs - start, 1))
            row: dict[str, Any] = {"fold": self.fold, "epoch": epoch + 1, "learning_rate": p.learning_rate_at(epoch)}
            for group in self.optimizer.param_groups:
                group["lr"] = row["learning_rate"]
            row.update(self._train_epoch(epoch, epoch_report))
            if not math.isfinite(row["train_loss"]):
                # Saving would replace a usable checkpoint by NaN weights that no bundle can hold.
                kept = f"the checkpoint of epoch {self.epoch} is kept" if self.epoch else "nothing was saved"
                raise InputError(f"Fold {self.fold} diverged in epoch {epoch + 1}: the training loss is "
                                 f"{row['train_loss']}; {kept}. Lower the learning rate (now {p.learning_rate:g})"
                                 f"{' or turn off bf16' if p.bf16 else ''} and start afresh in another output.")
            row.update(self._validate())
            row["seconds"] = round(time.perf_counter() - began, 3)
            self.epoch = epoch + 1
            if p.selection == "last" or _better(row, self.best):
                self.best = {"epoch": self.epoch, "macro_f1": row["val_macro_f1"], "loss": row["val_loss"],
                             "state": _cpu_copy(unwrap(self.model).state_dict()),
                             "validation_probabilities": self._last_probabilities}
            row["kept"] = self.best["epoch"] == self.epoch
            self.history.append(row)
            if self.context.is_main:
                self._save()
            self.context.barrier()
            epoch_report(1.0, f"epoch {self.epoch}/{p.epochs}: loss {row['train_loss']:.3f}, "
                              f"val F1 {row['val_macro_f1']:.2f}")
            if on_epoch is not None and self.context.is_main:
                on_epoch(self.fold, self.epoch, dict(row))
        if self.context.is_main:
            from .plots import plot_history

            plot_history(self.history, self.dir / "curves.png", f"Fold {self.fold}: {'+'.join(p.modalities)}",
                         selected_epoch=self.best["epoch"])
        return self.result()

    def result(self) -> FoldResult:
        return _fold_result(self.fold, self.best, self.history, self.train_ids, self.val_ids,
                            [self.data.labels[i] for i in self.val_index])


def _fold_result(fold: int, best: dict[str, Any], history: list[dict[str, Any]], train_ids: Sequence[str],
                 val_ids: Sequence[str], val_labels: Sequence[int]) -> FoldResult:
    row = next(r for r in history if r["epoch"] == best["epoch"])
    metrics = {k[4:]: v for k, v in row.items() if k.startswith("val_")}
    rows = best.get("validation_probabilities")
    oof = None
    if rows is not None and len(rows) == len(val_ids):
        oof = [{"patient_id": patient, "label": CLASS_NAMES[int(label)], "fold": int(fold),
                "p": {c: float(v) for c, v in zip(CLASS_NAMES, probabilities)}}
               for patient, label, probabilities in zip(val_ids, val_labels, rows)]
    return FoldResult(fold, int(best["epoch"]), metrics, best["state"], list(history), list(train_ids), list(val_ids),
                      oof)


def reliability_diagram(out_of_fold: Sequence[Mapping[str, Any]], calibration: Mapping[str, Any], path: Path) -> Path:
    """The reliability diagram of the out-of-fold probabilities, raw and (where applied) calibrated."""
    from RICENetLib.calibration import reliability_curves

    from .plots import plot_reliability

    curves = reliability_curves(list(out_of_fold), dict(calibration), CLASS_NAMES)
    return plot_reliability(curves["raw"], curves["calibrated"], dict(calibration), path)


def _check_fingerprint(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    changed = [k for k in current if saved.get(k) != current[k]]
    if changed:
        details = "; ".join(f"{k}: was {_short(saved.get(k))}, now {_short(current[k])}" for k in changed)
        raise InputError(f"{where} was made with other settings ({details}). Use the same settings "
                         "to resume, or start afresh in another output.")


def finished_fold(work_dir: str | os.PathLike, data: CaseTensors, folds: Folds, fold: int,
                  params: TrainingParameters) -> FoldResult | None:
    """A fold another job finished (``--fold k`` runs), read from its checkpoint; ``None`` if unfinished.

    The checkpoint must match these settings, except for the number of
    processes it was trained with.
    """
    path = fold_dir(Path(work_dir), fold) / CHECKPOINT_NAME
    if not path.exists():
        return None
    state = load_checkpoint(path)
    train_ids, val_ids = folds.train_ids(fold), folds.validation_ids(fold)
    current = _fingerprint(params, fold, train_ids, val_ids, data.shape, state["fingerprint"].get("processes", 1))
    _check_fingerprint(state["fingerprint"], current, path)
    if int(state["epoch"]) < params.epochs:
        return None
    best = dict(state["best"])
    if best["state"] is None:
        best["state"] = state["model"]
    return _fold_result(fold, best, list(state["history"]), train_ids, val_ids,
                        [data.labels[i] for i in data.indices(val_ids)])


def _better(row: dict[str, Any], best: dict[str, Any]) -> bool:
    f1, loss = row["val_macro_f1"], row["val_loss"]
    return f1 > best["macro_f1"] or (f1 == best["macro_f1"] and loss < best["loss"])


def _macro_f1_from_confusion(matrix: torch.Tensor) -> float:
    from RICENetLib.metrics import f1_per_class

    return float(f1_per_class(matrix.numpy()).mean())


def _cpu_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def history_csv(history: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def train_fold(data: CaseTensors, folds: Folds, fold: int, params: TrainingParameters, work_dir: str | os.PathLike,
               *, resume: bool = False, context: DistContext | None = None, progress=None, cancel=None,
               on_epoch: EpochCallback | None = None) -> FoldResult:
    """Train (or finish) one fold in ``work_dir/fold{k}``; returns its kept weights and metrics."""
    params.validate()
    context = context or DistContext(0, 1, resolve_device(params.device))
    trainer = _FoldTrainer(data, folds, fold, params, Path(work_dir), context, resume)
    with _deterministic(context.device):
        return trainer.run(as_progress(progress, cancel), on_epoch)


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """cuDNN in deterministic mode for the duration of training (restored afterwards)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _prefixed(report: Progress, prefix: str) -> Progress:
    return Progress(lambda fraction, message: report(fraction, f"{prefix}, {message}"), report.cancel)


def default_work_dir(out: str | os.PathLike) -> Path:
    """Checkpoints, logs and curves of a bundle's training live beside it: ``BUNDLE.work``."""
    out = Path(out)
    return out.with_name(out.name + ".work")


def check_output_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """A non-empty output is refused unless the training is resumed or the output overwritten."""
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise InputError(f"Output {out} already exists; choose another, resume its training, or overwrite it.")


def train_ensemble(
    cases: Sequence[Case],
    out: str | os.PathLike,
    params: TrainingParameters,
    *,
    load: CaseLoader | None = None,
    data: CaseTensors | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    folds: Folds | None = None,
    folds_file: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress=None,
    cancel=None,
    on_epoch: EpochCallback | None = None,
    context: DistContext | None = None,
    assemble: bool = True,
) -> TrainingResult:
    """Cross-validate on ``cases`` and write the ensemble bundle to ``out`` once every fold is done.

    The inputs are checked first — parameters, cohort (labels, both classes,
    enough patients per class for the folds), output folder — and then every
    case is loaded, so that no problem surfaces after training has started.
    Cases come from ``data`` (already loaded), from ``load`` (a case loader)
    or, by default, from the preprocessing pipeline with ``preprocessing``
    parameters. Folds come from ``folds``, else ``folds_file`` (made there on
    first use and reused after), else ``work_dir/folds.json``.

    With ``params.folds`` naming some folds only (parallel jobs), the other
    folds are picked up from their checkpoints when finished; the bundle is
    written by whichever run finds all folds done. Under ``torchrun`` each
    fold is trained data-parallel (:mod:`.ddp`) and only rank 0 writes; a
    caller running several trainings in one process group passes its
    ``context`` (and then owns the group). ``assemble=False`` trains the
    chosen folds only and leaves the bundle to the caller
    (:mod:`.parallel_folds`, whose processes must not write it twice).
    """
    import shutil

    from .ddp import init_from_environment, shutdown

    params.validate()
    report = as_progress(progress, cancel)
    check_cohort(cases, params.n_folds)
    out = Path(out)
    work = Path(work_dir) if work_dir is not None else default_work_dir(out)
    check_output_folder(out, resume, overwrite)
    owns_group = context is None
    if context is None:
        context = init_from_environment(resolve_device(params.device))
    try:
        if overwrite and not resume and context.is_main:
            for k in params.fold_indices():
                shutil.rmtree(fold_dir(work, k), ignore_errors=True)
        if folds is None:
            folds = folds_for_cohort(cases, Path(folds_file) if folds_file else work / "folds.json",
                                     params.n_folds, params.seed)
        if folds.n_folds != params.n_folds:
            raise InputError(f"The folds have {folds.n_folds} folds but {params.n_folds} were asked for.")
        if data is None:
            if load is None:
                load, preprocessing = pipeline_loader(preprocessing)
            data = load_cases(cases, load, progress=report.sub(0.0, LOADING_SHARE))
        context.barrier()
        chosen = params.fold_indices()
        results = []
        for number, k in enumerate(chosen):
            share = report.sub(0.05 + 0.9 * number / len(chosen), 0.05 + 0.9 * (number + 1) / len(chosen))
            fold_report = _prefixed(share, f"fold {k + 1}/{params.n_folds}")
            results.append(train_fold(data, folds, k, params, work, resume=resume, context=context,
                                      progress=fold_report, on_epoch=on_epoch))
        bundle = None
        missing: list[int] = []
        if context.is_main and assemble:
            for k in sorted(set(range(params.n_folds)) - set(chosen)):
                other = finished_fold(work, data, folds, k, params)
                if other is None:
                    missing.append(k)
                else:
                    results.append(other)
            results.sort(key=lambda r: r.fold)
            if not missing:
                from .cohort_features import out_of_distribution_reference

                ood = out_of_distribution_reference(results, data, params, context.device,
                                                    progress=report.sub(0.95, 0.97))
                report(0.97, "writing the bundle")
                bundle = export_bundle(out, results, params, folds, data.shape, preprocessing or {}, work,
                                       overwrite=True, out_of_distribution=ood)
        context.barrier()
        report(1.0, f"folds {', '.join(map(str, missing))} still to train" if missing else "done")
        return TrainingResult(bundle, results, missing, work)
    finally:
        if owns_group:
            shutdown(context)


def export_bundle(out: Path, results: Sequence[FoldResult], params: TrainingParameters, folds: Folds,
                  input_size: Sequence[int], preprocessing: Mapping[str, Any], work: Path,
                  overwrite: bool = False, out_of_distribution: Any = None) -> Path:
    """Write the bundle with the training log, per-fold curves, the folds and the reliability diagram beside the weights.

    ``out_of_distribution``: the cohort features' reference (:mod:`.cohort_features`), sealed in the bundle.
    """
    from RICENetLib.bundle import BundleFold, write_bundle

    from .folds import save_folds

    save_folds(folds, work / "folds.json")
    write_text(work / "training_log.csv", history_csv([row for r in results for row in r.history]))
    extra = {"folds.json": work / "folds.json", "training_log.csv": work / "training_log.csv"}
    for r in results:
        curves = fold_dir(work, r.fold) / "curves.png"
        if curves.exists():
            extra[f"curves_fold{r.fold}.png"] = curves
    entries = [BundleFold(r.fold, tuple(r.train_patients), tuple(r.validation_patients), r.metrics, r.epoch,
                          state_dict=r.state_dict) for r in results]
    training = params.to_dict()
    for local_only in ("device", "num_workers", "folds", "augment_on"):
        training.pop(local_only)
    training["kept_weights"] = ("epoch with the best validation macro F1 (ties: lower validation loss)"
                                if params.selection == "best_f1" else "last epoch")
    out_of_fold, calibration = None, None
    if all(r.out_of_fold is not None for r in results):  # folds from an earlier version have none: no calibration
        from RICENetLib.calibration import calibration_from_out_of_fold

        out_of_fold = sorted((entry for r in results for entry in r.out_of_fold), key=lambda e: e["patient_id"])
        calibration = calibration_from_out_of_fold(out_of_fold, CLASS_NAMES)
        extra["reliability.png"] = reliability_diagram(out_of_fold, calibration, work / "reliability.png")
    return write_bundle(out, entries, modalities=params.modalities, architecture=params.network_architecture(),
                        input_size=input_size, preprocessing=preprocessing, seed=params.seed, training=training,
                        extra_files=extra, overwrite=overwrite, out_of_fold=out_of_fold, calibration=calibration,
                        out_of_distribution=out_of_distribution)
