"""What the RICENet Slicer module does, without Qt: volumes in, verdict and overlays out.

The widget (``RICENet.py``) only collects settings and drives this logic; the
same logic runs in scripts, in the tests (on ``slicer-core``) and in Slicer's
self-test. MRML is touched only through :mod:`RICENetLib.mrml`, and only on the
caller's thread; the heavy part runs where the caller wants it:

>>> logic = ClassificationLogic(scene)                                  # doctest: +SKIP
>>> job = logic.prepare(postop_node, event_node, dose_node, settings)   # main thread: MRML → images
>>> prediction = logic.compute(job, progress, cancel)                   # worker thread: no MRML
>>> result = logic.show(job, prediction)                                # main thread: results → nodes
>>> result.verdict                                                      # doctest: +SKIP
'Recurrence — 4 of 5 folds, mean p = 0.81'

:meth:`ClassificationLogic.run` does the three steps in a row;
:meth:`ClassificationLogic.start` runs ``compute`` on a
:class:`~RICENetLib.background.BackgroundTask` for the GUI to poll.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import SimpleITK as sitk

from . import mrml, quality
from .background import BackgroundTask
from .errors import InputError

DEVICES = ("auto", "cpu", "cuda", "mps")
SKULL_STRIP_CHOICES = ("bundle", "deepbet", "hd-bet", "none")  # "bundle": as the model was trained
OCCLUSION_CHOICES = ("none", "quick", "standard", "fine")
DOSE_UNITS = ("auto", "Gy", "cGy")


#: What the engine needs inside Slicer beyond Slicer itself (SimpleITK, numpy, VTK, pydicom) and the
#: PyTorch extension (torch); installed on first use with one confirmation, never at import time.
CORE_REQUIREMENTS = ("monai>=1.4", "safetensors>=0.4", "nibabel>=5", "matplotlib>=3.7")
SKULL_STRIP_REQUIREMENTS = {"deepbet": ("deepbet>=1.0",), "hd-bet": ("hd-bet>=2.0",), "none": ()}
SAMPLE_DATA_REQUIREMENTS = ("nilearn>=0.10",)
#: What *Export to DICOM* needs (installed on its first use).
DICOM_EXPORT_REQUIREMENTS = ("highdicom>=0.28",)


def path_text(value: Any) -> str:
    """A path parameter as text, "" when unset (``pathlib.Path()`` and scenes saved with it hold ".").

    >>> path_text(Path()), path_text(""), path_text(None), path_text("/models/ricenet")
    ('', '', '', '/models/ricenet')
    """
    text = str(value) if value else ""
    return "" if text == "." else text


def bundle_skull_strip(bundle: str | os.PathLike) -> str:
    """The skull-stripping backend a bundle was trained with (``deepbet`` when it does not say)."""
    import json

    try:
        header = json.loads((Path(bundle) / "bundle.json").read_text(encoding="utf-8"))
        return str((header.get("preprocessing") or {}).get("skull_strip", "deepbet"))
    except (OSError, ValueError, AttributeError):
        return "deepbet"


def required_packages(settings: "ClassificationSettings") -> list[str]:
    """The pip requirements a run with ``settings`` needs (torch excluded: it comes from the PyTorch extension)."""
    backend = settings.skull_strip if settings.skull_strip != "bundle" else bundle_skull_strip(settings.bundle)
    return list(CORE_REQUIREMENTS) + list(SKULL_STRIP_REQUIREMENTS.get(backend, ()))


def parse_levels(text: str | Sequence[float]) -> tuple[float, ...]:
    """Isodose levels from ``"50, 60"`` (Gy), sorted; an empty text gives no levels."""
    if not isinstance(text, str):
        values = [float(v) for v in text]
    else:
        parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise InputError(f"Isodose levels '{text}': give numbers in Gy separated by commas, e.g. 50, 60.") from None
    if any(not math.isfinite(v) or v <= 0 for v in values):
        raise InputError(f"Isodose levels {values}: every level must be a positive dose in Gy.")
    return tuple(sorted(set(values)))


@dataclass
class ClassificationSettings:
    """The module's choices, as the parameter node stores them (plain values only).

    ``occlusion`` is a preset of :data:`RICENetLib.occlusion.OCCLUSION_PRESETS`
    or ``"none"``; ``skull_strip="bundle"`` keeps the bundle's backend;
    ``heatmap_threshold`` is a fraction of the map's maximum.
    """

    bundle: str = ""
    device: str = "auto"
    skull_strip: str = "bundle"
    occlusion: str = "quick"
    dose_unit: str = "auto"
    isodose_levels: str = "50, 60"
    heatmap_threshold: float = 0.2
    heatmap_opacity: float = 0.6

    def validate(self) -> "ClassificationSettings":
        """Refuse unusable settings with a message naming the setting."""
        if not self.bundle:
            raise InputError("Choose a model bundle folder (it holds bundle.json and one weights file per fold).")
        if not Path(self.bundle).is_dir():
            raise InputError(f"Model bundle folder {self.bundle} does not exist.")
        for name, value, choices in (("device", self.device, DEVICES), ("skull stripping", self.skull_strip, SKULL_STRIP_CHOICES),
                                     ("occlusion preset", self.occlusion, OCCLUSION_CHOICES), ("dose unit", self.dose_unit, DOSE_UNITS)):
            if value not in choices and not (name == "device" and str(value).startswith("cuda:")):
                raise InputError(f"Unknown {name} '{value}'; use one of {', '.join(choices)}.")
        parse_levels(self.isodose_levels)
        if not 0.0 <= float(self.heatmap_threshold) < 1.0:
            raise InputError(f"Heatmap threshold {self.heatmap_threshold}: use a fraction of the maximum from 0 to below 1.")
        if not 0.0 <= float(self.heatmap_opacity) <= 1.0:
            raise InputError(f"Heatmap opacity {self.heatmap_opacity}: use a value from 0 to 1.")
        return self

    def predict_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`RICENetLib.inference.predict_case`."""
        return {
            "device": None if self.device == "auto" else self.device,
            "occlusion": None if self.occlusion == "none" else self.occlusion,
            "skull_strip": None if self.skull_strip == "bundle" else self.skull_strip,
            "dose_unit": None if self.dose_unit == "auto" else self.dose_unit,
        }

    def heatmap_style(self) -> mrml.HeatmapStyle:
        return mrml.HeatmapStyle(threshold=float(self.heatmap_threshold), opacity=float(self.heatmap_opacity))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClassificationSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ClassificationJob:
    """The three images read from the scene, and where they came from."""

    postop: sitk.Image
    event: sitk.Image
    dose: sitk.Image
    settings: ClassificationSettings
    postop_id: str
    event_id: str
    dose_id: str
    lesion: sitk.Image | None = None  # a mask where Slicer shows it (world = the post-op frame)
    lesion_name: str = ""
    dose_overlap: Any = None  # set by compute (RICENetLib.dose_overlap.DoseOverlap)

    @property
    def key(self) -> str:
        """Result nodes belong to the event volume: re-running that case updates them."""
        return self.event_id


@dataclass
class ClassificationResult:
    """A finished run: the prediction, its verdict line and the IDs of the result nodes."""

    prediction: Any
    verdict: str
    node_ids: dict[str, str] = field(default_factory=dict)
    #: Warnings for the user about this result (e.g. an occlusion grid too coarse for the model's input).
    messages: list[str] = field(default_factory=list)


def verdict_line(prediction: Any) -> str:
    """``Recurrence — 4 of 5 folds, mean p = 0.81`` (the same line as the CLI and the report)."""
    from .quality import attach
    from .report import prediction_verdict

    data = attach(prediction.to_dict(), prediction) if hasattr(prediction, "to_dict") else dict(prediction)
    return prediction_verdict(data)


def occlusion_messages(prediction: Any) -> list[str]:
    """A warning when the heatmap's boxes were too large for the model's input (the ``quick`` preset on 40³)."""
    from .occlusion_resolution import settings_warning

    settings, volume = getattr(prediction, "occlusion_settings", None), getattr(prediction, "occlusion_model_space", None)
    if settings is None or volume is None:
        return []
    warning = settings_warning(tuple(volume.shape), settings)
    if not warning:
        return []
    return [f"The heatmap cannot show much: {warning} (The module's presets suit 224³ inputs; the command line "
            "takes the mask and stride: ricenet predict --occlusion --occlusion-mask M --occlusion-stride S.)"]


def _default_predict(bundle: Any, postop: sitk.Image, event: sitk.Image, dose: sitk.Image, **kwargs: Any) -> Any:
    from .inference import predict_case

    return predict_case(bundle, postop, event, dose, **kwargs)


class ClassificationLogic:
    """Classify the case on the scene and show the answer there (see the module docstring).

    ``predict`` defaults to :func:`RICENetLib.inference.predict_case`; it can be
    replaced (same signature) for tests or a remote engine.
    """

    def __init__(self, scene: Any, predict: Callable[..., Any] | None = None) -> None:
        self.scene = scene
        self.predict = predict or _default_predict
        self._shown_style: mrml.HeatmapStyle | None = None  # what the heatmap and the slice views show now

    # -- choosing inputs ---------------------------------------------------
    def guess_inputs(self) -> dict[str, Any]:
        """Pre-selections for the three inputs (SlicerRT's RTDOSE mark, then names)."""
        return mrml.guess_input_volumes(self.scene)

    # -- the three steps ---------------------------------------------------
    def prepare(self, postop_node: Any, event_node: Any, dose_node: Any, settings: ClassificationSettings,
                lesion_node: Any = None, lesion_segment_id: str | None = None) -> ClassificationJob:
        """Check the settings and read the volumes as shown (main thread).

        ``lesion_node`` (a segmentation with ``lesion_segment_id``, or a labelmap volume) outlines the lesion
        for the dose figures (:mod:`RICENetLib.dose_overlap`).
        """
        settings.validate()
        for name, node in (("post-op MRI", postop_node), ("event MRI", event_node), ("dose", dose_node)):
            if node is None:
                raise InputError(f"Select the {name} volume.")
        ids = [postop_node.GetID(), event_node.GetID(), dose_node.GetID()]
        if len(set(ids)) != 3:
            raise InputError("The post-op MRI, the event MRI and the dose must be three different volumes.")
        return ClassificationJob(
            postop=mrml.volume_to_image(postop_node),
            # The event is read as it was before any earlier RICE-NET registration, so a re-run starts afresh.
            event=mrml.volume_to_image(event_node, skip_registration=True),
            dose=mrml.volume_to_image(dose_node),
            settings=settings,
            postop_id=ids[0], event_id=ids[1], dose_id=ids[2],
            **self._lesion(lesion_node, lesion_segment_id),
        )

    @staticmethod
    def _lesion(node: Any, segment_id: str | None) -> dict[str, Any]:
        if node is None:
            return {}
        from .dose_overlap import lesion_mask

        segment = node.GetSegmentation().GetSegment(segment_id) if segment_id and node.IsA("vtkMRMLSegmentationNode") else None
        name = f"Lesion '{segment.GetName()}' of '{node.GetName()}'" if segment is not None else f"Lesion '{node.GetName()}'"
        return {"lesion": lesion_mask(mrml.lesion_to_image(node, segment_id), name), "lesion_name": name}

    def compute(self, job: ClassificationJob, progress: Any = None, cancel: Any = None) -> Any:
        """Run the ensemble (and occlusion) on the job's images, then the dose figures; touches no MRML (worker thread)."""
        from .dose_overlap import prediction_dose_overlap

        prediction = self.predict(job.settings.bundle, job.postop, job.event, job.dose, progress=progress, cancel=cancel,
                                  **job.settings.predict_options())
        job.dose_overlap = prediction_dose_overlap(prediction, job.dose, lesion=job.lesion, lesion_name=job.lesion_name)
        return prediction

    def show(self, job: ClassificationJob, prediction: Any) -> ClassificationResult:
        """Create or update the result nodes and set up the slice views (main thread)."""
        scene, key = self.scene, job.key
        event_node = scene.GetNodeByID(job.event_id)
        dose_node = scene.GetNodeByID(job.dose_id)
        if event_node is None:
            raise InputError("The event MRI was removed from the scene while RICE-NET was running.")
        name = event_node.GetName() or "event"
        ids: dict[str, str] = {}
        ids["table"] = mrml.update_results_table(scene, prediction, key=key, name=f"{name} RICE-NET results",
                                                 extra_rows=quality.table_rows(quality.report_of(prediction))).GetID()
        transform = getattr(prediction, "event_to_reference", None)
        if transform is not None:
            ids["transform"] = mrml.update_registration_transform(
                scene, transform, moving=event_node, key=key, name=f"{name} RICE-NET registration").GetID()
        occlusion = getattr(prediction, "occlusion", None)
        if occlusion is not None:
            node = mrml.update_heatmap(scene, occlusion, background=event_node, key=key, style=job.settings.heatmap_style(),
                                       name=f"{name} RICE-NET heatmap")
            ids["heatmap"] = node.GetID()
            self._shown_style = job.settings.heatmap_style()
            mrml.jump_slice_views(scene, mrml.peak_ras(occlusion))
        else:
            stale = mrml.find_role_node(scene, "vtkMRMLScalarVolumeNode", mrml.ROLE_HEATMAP, key)
            if stale is not None:  # a heatmap of an earlier run would now be misleading
                scene.RemoveNode(stale)
            mrml.show_in_slice_views(scene, background=event_node)
        ids.update(self._show_dose_overlap(job, name))
        levels = parse_levels(job.settings.isodose_levels)
        if levels and dose_node is not None:
            scale = 0.01 if job.settings.dose_unit == "cGy" else 1.0
            ids["isodose"] = mrml.update_isodose(scene, dose_node, levels, key=key, unit_scale=scale,
                                                 name=f"{name} RICE-NET isodose").GetID()
        return ClassificationResult(prediction, verdict_line(prediction), ids, occlusion_messages(prediction))

    def _show_dose_overlap(self, job: ClassificationJob, name: str) -> dict[str, str]:
        """The dose figures as a table of their own (quantity, value); a stale one goes."""
        if job.dose_overlap is None:
            stale = mrml.find_role_node(self.scene, "vtkMRMLTableNode", mrml.ROLE_DOSE_OVERLAP, job.key)
            if stale is not None:
                self.scene.RemoveNode(stale)
            return {}
        rows = [{"quantity": quantity, "value": value} for quantity, value in job.dose_overlap.rows()]
        node = mrml.update_table_from_rows(self.scene, rows, role=mrml.ROLE_DOSE_OVERLAP, key=job.key,
                                           name=f"{name} RICE-NET heatmap and dose")
        return {"dose_overlap": node.GetID()}

    def run(self, postop_node: Any, event_node: Any, dose_node: Any, settings: ClassificationSettings,
            progress: Any = None, cancel: Any = None, lesion_node: Any = None,
            lesion_segment_id: str | None = None) -> ClassificationResult:
        """All three steps on the calling thread (scripts, tests, the Slicer self-test)."""
        job = self.prepare(postop_node, event_node, dose_node, settings, lesion_node, lesion_segment_id)
        return self.show(job, self.compute(job, progress, cancel))

    def start(self, job: ClassificationJob) -> BackgroundTask:
        """Start :meth:`compute` on a worker thread; poll the task, then call :meth:`show` with its result."""
        return BackgroundTask(lambda progress, cancel: self.compute(job, progress, cancel), name="RICE-NET inference").start()

    # -- after a run ---------------------------------------------------------
    def export(self, job: ClassificationJob, prediction: Any, folder: str | os.PathLike, overwrite: bool = False) -> dict[str, Path]:
        """Write the CLI's report (prediction.json, occlusion.nii.gz, overview.png, report.html) into ``folder``."""
        from .prediction_outputs import write_prediction

        return write_prediction(prediction, folder, job.postop, job.event, job.dose, overwrite=overwrite,
                                dose_overlap=job.dose_overlap, lesion=job.lesion)

    def export_dicom(self, job: ClassificationJob, prediction: Any, folder: str | os.PathLike,
                     file_for_instance: Callable[[str], str | None], overwrite: bool = False) -> dict[str, Path]:
        """Write the results as DICOM (Parametric Map, Segmentation, SR) into ``folder``.

        The three inputs must have been loaded from DICOM: ``file_for_instance`` finds each of their
        SOP instances' files (in Slicer, ``slicer.dicomDatabase.fileForInstance``). The lesion, when given,
        is taken where Slicer shows it (the post-op frame).
        """
        from .dicom_export import export_prediction, sources_from_files
        from .prediction_outputs import prediction_record

        files, names = {}, {}
        for role, node_id, what in (("postop", job.postop_id, "post-op MRI"), ("event", job.event_id, "event MRI"),
                                    ("dose", job.dose_id, "dose")):
            node = self.scene.GetNodeByID(node_id)
            names[role] = f"{what} '{node.GetName() if node is not None else node_id}'"
            uids = mrml.dicom_instance_uids(node)
            found = [file_for_instance(uid) for uid in uids]
            if not uids or not all(found):
                raise InputError(f"The {names[role]} was not loaded from Slicer's DICOM database (or its files are "
                                 "gone), so DICOM results cannot join its patient and study. Load the post-op MRI, the "
                                 "event MRI and the RTDOSE with the DICOM module, or use Export report.")
            files[role] = found
        sources = sources_from_files(files["postop"], files["event"], files["dose"], names)
        data = prediction_record(prediction, {role: " ".join(str(f) for f in found[:1]) for role, found in files.items()},
                                 job.dose_overlap)
        return export_prediction(folder, prediction, data, sources, job.dose, lesion=job.lesion, overwrite=overwrite)

    def restyle_heatmap(self, heatmap_id: str | None, settings: ClassificationSettings, *, force: bool = False) -> bool:
        """Apply changed threshold/opacity to the shown heatmap without recomputing it; True when restyled.

        The widget calls this whenever its parameter node changes (so it reads
        the slider's new value, never the previous one); nothing happens
        unless the threshold or the opacity differ from what is shown, so a
        foreground opacity the user set in a slice view stays as it is.
        """
        node = self.scene.GetNodeByID(heatmap_id) if heatmap_id else None
        style = settings.heatmap_style()
        if node is None or (style == self._shown_style and not force):
            return False
        mrml.set_heatmap_style(node, style)
        mrml.set_foreground_opacity(self.scene, float(settings.heatmap_opacity))
        self._shown_style = style
        return True


# --------------------------------------------------------------------------- sample data and self-test


def untrained_bundle(path: str | os.PathLike, n_folds: int = 2, input_size: int = 32, spacing_mm: float = 6.0,
                     skull_strip: str = "none", seed: int = 0) -> Path:
    """A tiny bundle with random weights, to exercise the whole pipeline in seconds (self-tests, demos).

    Its answers mean nothing: it is MONAI's resnet18 eight times narrower,
    never trained. Use a trained bundle (RICENetTraining) for real cases.
    """
    import torch

    from .bundle import BundleFold, write_bundle
    from .model import build_network, default_architecture

    architecture = dict(default_architecture(3), widen_factor=0.125)
    torch.manual_seed(seed)
    folds = [BundleFold(k, (), (), {}, epoch=0, state_dict=build_network(architecture).state_dict()) for k in range(n_folds)]
    preprocessing = {"spacing_mm": float(spacing_mm), "input_size": [int(input_size)] * 3, "skull_strip": skull_strip}
    return write_bundle(path, folds, modalities=("postop", "event", "dose"), architecture=architecture,
                        input_size=(int(input_size),) * 3, preprocessing=preprocessing, seed=seed,
                        training={"note": "untrained: for tests and demonstrations only"}, overwrite=True)



def load_synthetic_case(scene: Any, label: str = "recurrence", seed: int = 7, size: int | None = 96,
                        spacing_mm: float | None = None, progress: Any = None) -> dict[str, Any]:
    """Put a synthetic case (post-op, event, dose) into the scene: the Sample Data entry.

    The dose volume carries SlicerRT's dose attribute, as an imported RTDOSE
    would, so the module pre-selects it. Returns the three nodes by modality.
    """
    from .synthetic import generate_case

    case = generate_case(f"RICE-NET sample {label}", label, seed=seed, size=size if spacing_mm is None else None,
                         spacing_mm=spacing_mm)
    nodes = {
        "postop": mrml.image_to_volume(case.postop, scene, name="RICENet sample post-op T1c"),
        "event": mrml.image_to_volume(case.event, scene, name="RICENet sample event T1c"),
        "dose": mrml.image_to_volume(case.dose, scene, name="RICENet sample RTDOSE"),
    }
    nodes["dose"].SetAttribute(mrml.DOSE_ATTRIBUTE, "1")
    for node in nodes.values():
        node.SetAttribute("RICENet.Sample", case.case_id)
    return nodes
