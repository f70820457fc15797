"""Review mode in a scene: show one case of a :class:`~RICENetLib.review.ReviewList`, replacing the last.

Showing a case loads its three volumes from their files, then either

* shows its stored results (``prediction.json``, ``occlusion.nii.gz``,
  ``registration.tfm``) through the module's own display code
  (:meth:`ClassificationLogic.show`) without running the engine, or
* hands back a prepared job for the engine, which the caller runs as a normal
  Apply does (:meth:`ClassificationLogic.start` in the GUI, :meth:`compute`
  in scripts) and then shows with :meth:`ClassificationLogic.show`;

and then removes the previous case's nodes (its three volumes, results table,
heatmap, isodose lines, registration transform, dose table: everything tagged
with its keys). A case that failed in the batch, or whose files cannot be
read, comes back with its error (and whatever of it could be loaded); the list
goes on. MRML is reached only through :mod:`RICENetLib.mrml` and the logic;
main thread only.

>>> view = ReviewScene(ClassificationLogic(scene))                # doctest: +SKIP
>>> shown = view.show(review.current, settings)                   # doctest: +SKIP
>>> shown.result.verdict if shown.result else shown.error         # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import MODALITIES, mrml
from .errors import RICENetError
from .review import ReviewCase, load_stored
from .slicer_logic import ClassificationJob, ClassificationLogic, ClassificationResult, ClassificationSettings

REVIEW_KEY_PREFIX = "RICENet.Review:"
VOLUME_NAMES = {"postop": "post-op T1c", "event": "event T1c", "dose": "dose"}


@dataclass
class ShownCase:
    """What :meth:`ReviewScene.show` put in the scene for one case."""

    case: ReviewCase
    volumes: dict[str, Any] = field(default_factory=dict)  # postop, event, dose nodes
    result: ClassificationResult | None = None  # stored results, shown
    job: ClassificationJob | None = None  # no stored results: run the engine on this job, then logic.show(job, ...)
    error: str = ""

    @property
    def needs_engine(self) -> bool:
        return self.job is not None and self.result is None


class ReviewScene:
    """Puts one review case at a time into the logic's scene."""

    def __init__(self, logic: ClassificationLogic) -> None:
        self.logic = logic
        self._keys: set[str] = set()  # tags of the nodes the shown case owns
        self._shows = 0  # a new tag for every show, so that showing a case again never finds the old nodes

    @property
    def scene(self) -> Any:
        return self.logic.scene

    def clear(self) -> int:
        """Remove the shown case's nodes; returns how many tagged nodes went."""
        removed = mrml.remove_keyed_nodes(self.scene, self._keys)
        self._keys = set()
        return removed

    def show(self, case: ReviewCase, settings: ClassificationSettings) -> ShownCase:
        """Replace the shown case by ``case`` (see the module docstring); a bad case comes back with its error.

        The new case's nodes go in first and the last case's come out after, so the slice views switch from
        one case to the next without showing an empty scene in between.
        """
        previous, self._keys = self._keys, set()
        shown = ShownCase(case)
        try:
            if case.error:
                shown.error = case.error
                return shown
            images = self._load_volumes(case, shown)
            if case.stored:
                prediction = load_stored(case)
                job = ClassificationJob(images["postop"], images["event"], images["dose"], settings,
                                        *(shown.volumes[m].GetID() for m in MODALITIES))
                if prediction.dose_overlap:
                    from .dose_overlap import DoseOverlap

                    job.dose_overlap = DoseOverlap.from_dict(prediction.dose_overlap)
                shown.result = self.logic.show(job, prediction)
                shown.job = job
                if prediction.event_to_reference is None:
                    shown.result.messages.append(
                        f"{case.results} holds no registration.tfm (written by an earlier RICE-NET): the event MRI "
                        "is shown as stored, not lined up with the heatmap; run the case again to register it.")
            else:
                v = shown.volumes
                mrml.show_in_slice_views(self.scene, background=v["event"])
                shown.job = self.logic.prepare(v["postop"], v["event"], v["dose"], settings)
        except RICENetError as error:
            shown.error = str(error)
        finally:
            mrml.remove_keyed_nodes(self.scene, previous)
        return shown

    def _load_volumes(self, case: ReviewCase, shown: ShownCase) -> dict[str, Any]:
        from .errors import InputError
        from .image_io import read_image

        missing = [m for m in MODALITIES if m not in case.inputs]
        if missing:
            raise InputError(f"Case {case.case_id}: the {', '.join(missing)} image(s) are not recorded "
                             "(results exported from Slicer keep no file paths); open the cohort table instead.")
        self._shows += 1
        key = f"{REVIEW_KEY_PREFIX}{case.case_id}#{self._shows}"
        self._keys.add(key)
        images = {}
        for modality in MODALITIES:
            images[modality] = read_image(case.inputs[modality])
            shown.volumes[modality] = mrml.image_to_volume(
                images[modality], self.scene, name=f"{case.case_id} {VOLUME_NAMES[modality]}",
                role=f"{mrml.ROLE_REVIEW_VOLUME}:{modality}", key=key)
        shown.volumes["dose"].SetAttribute(mrml.DOSE_ATTRIBUTE, "1")
        self._keys.add(shown.volumes["event"].GetID())  # the results' key (ClassificationJob.key)
        return images


__all__ = ["ReviewScene", "ShownCase"]
