"""A prediction as standard DICOM objects, so that it reaches the patient record (PACS) with the images.

Written with ``highdicom`` when the inputs were DICOM (their headers give the
patient, the study and the geometry the results must share):

* ``heatmap.dcm`` — the occlusion heatmap as a **Parametric Map** (32-bit
  float; the value is the drop in the predicted class's probability, unit
  UCUM ``1``, stated in a Real World Value Mapping) on the post-op MRI's grid
  and Frame of Reference, derived from (referencing) that series;
* ``regions.dcm`` — the isodose regions (dose ≥ each level × the
  prescription) and the lesion, when given, as a binary **Segmentation** on
  the same grid;
* ``report.dcm`` — a **Comprehensive 3D SR** holding a TID 1500 Measurement
  Report: the verdict, the ensemble's mean (and calibrated) probabilities,
  each fold's probabilities, the bundle's id and checksum and the software
  version (algorithm identification), and every quality gate (its value as a
  numeric item, its state as a coded one); its evidence is the evaluated
  series (post-op, event MRI, RTDOSE).

All three join the post-op (planning) MRI's patient and study (the heatmap and
regions lie on that scan; the event MRI's study is referenced as other
evidence), each with a new Series UID. Concepts DICOM has no code for (the
probability of each class, RICE, the gates) are in the local coding scheme
:data:`SCHEME` ("99" marks a private scheme). The folder is built aside and
moved into place: nothing is half-written.

>>> sources = dicom_sources("case/postop", "case/event", "case/dose/RTDOSE.dcm")   # doctest: +SKIP
>>> export_dicom("out/dicom", data, sources, reference, heatmap=heatmap, dose_gy=dose, levels=(0.5, 0.95))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from . import __version__
from .errors import InputError

#: The local coding scheme of the concepts DICOM has no code for.
SCHEME = "99RICENET"
MANUFACTURER = "RICE-NET"
FILES = {"heatmap": "heatmap.dcm", "regions": "regions.dcm", "report": "report.dcm"}
#: Series numbers of the results (the synthetic inputs use 1 and 2).
SERIES_NUMBERS = {"heatmap": 901, "regions": 902, "report": 903}
CLASS_DISPLAY = {"recurrence": "tumour recurrence", "rice": "radiation-induced enhancement (RICE)"}
#: Geometry that differs by less than this (mm, cosines) is the same grid.
GRID_TOLERANCE = 1e-3


@dataclass
class DicomSources:
    """The inputs' DICOM headers: the post-op series sorted along its normal, the event series, the RTDOSE."""

    postop: list[Any]
    event: list[Any]
    dose: Any | None

    def evidence(self) -> list[Any]:
        return [*self.postop, *self.event, *([self.dose] if self.dose is not None else [])]


def software_version() -> str:
    return f"ricenet {__version__}"


def _local(value: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value, SCHEME, meaning)


def _series_files(path: Path, what: str) -> list[Path]:
    """The files of the DICOM series ``path`` names (a folder holding one series, or one of its files)."""
    import pydicom

    from .image_io import _is_dicom_file

    if not path.exists():
        raise InputError(f"The {what} {path} does not exist.")
    folder = path if path.is_dir() else path.parent
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and _is_dicom_file(p)] if path.is_dir() or _is_dicom_file(path) else []
    if not files:
        raise InputError(f"--dicom-out needs DICOM inputs: the {what} {path} is not DICOM (a NIfTI/NRRD file has no "
                         "patient, study or frame of reference for the results to join). Give the DICOM series "
                         "folder, or leave out --dicom-out.")
    if path.is_file():
        wanted = pydicom.dcmread(str(path), stop_before_pixels=True).SeriesInstanceUID
        return [p for p in files if pydicom.dcmread(str(p), stop_before_pixels=True).SeriesInstanceUID == wanted]
    return files


def _headers(files: Sequence[str | os.PathLike], what: str) -> list[Any]:
    import pydicom

    headers = []
    for file in files:
        try:
            headers.append(pydicom.dcmread(str(file), stop_before_pixels=True))
        except Exception as error:  # pydicom raises several types for broken files
            raise InputError(f"The {what}'s file {file} could not be read as DICOM ({error}).") from None
    return headers


def _image_series(headers: list[Any], path: object, what: str) -> list[Any]:
    """A classic MR/CT series' headers sorted along the slice normal (as ITK stacks them)."""
    if not headers:
        raise InputError(f"The {what} {path} has no DICOM files; DICOM results need the DICOM inputs.")
    series = {str(h.SeriesInstanceUID) for h in headers}
    if len(series) > 1:
        raise InputError(f"The {what} {path} holds {len(series)} DICOM series; put each series in its own folder.")
    if len(headers) == 1 and int(getattr(headers[0], "NumberOfFrames", 1) or 1) > 1:
        raise InputError(f"The {what} {path} is an Enhanced (multi-frame) image; DICOM results are written for "
                         "classic series (one file per slice) only.")
    if any(getattr(h, "Modality", "") == "RTDOSE" for h in headers):
        raise InputError(f"The {what} {path} is an RTDOSE, not an MRI series.")
    first = headers[0]
    orientation = np.array([float(v) for v in first.ImageOrientationPatient])
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(headers, key=lambda h: float(np.array([float(v) for v in h.ImagePositionPatient]) @ normal))


def dicom_sources(postop: str | os.PathLike, event: str | os.PathLike, dose: str | os.PathLike) -> DicomSources:
    """The inputs' headers for the results; an :class:`InputError` saying why when an input is not DICOM.

    Each input is a series folder or one of its files (the RTDOSE: its file). Cheap (headers only):
    ``ricenet predict --dicom-out`` calls it before the work.
    """
    files = {role: _series_files(Path(path), what) for role, path, what in
             (("postop", postop, "post-op MRI"), ("event", event, "event MRI"), ("dose", dose, "dose"))}
    return sources_from_files(files["postop"], files["event"], files["dose"], {"postop": postop, "event": event,
                                                                                "dose": dose})


def sources_from_files(postop: Sequence[str | os.PathLike], event: Sequence[str | os.PathLike],
                       dose: Sequence[str | os.PathLike], names: Mapping[str, object] | None = None) -> DicomSources:
    """:class:`DicomSources` from the files of each input (e.g. found in Slicer's DICOM database).

    ``names`` says how messages name each input (default: its first file).
    """
    names = dict(names or {})
    for role, files in (("postop", postop), ("event", event), ("dose", dose)):
        names.setdefault(role, files[0] if files else "(no file)")
    sources = DicomSources(_image_series(_headers(postop, "post-op MRI"), names["postop"], "post-op MRI"),
                           _image_series(_headers(event, "event MRI"), names["event"], "event MRI"), None)
    if len(dose) != 1:
        raise InputError(f"The dose {names['dose']} holds {len(dose)} DICOM files; give the RTDOSE file.")
    sources.dose = _headers(dose, "dose")[0]
    if getattr(sources.dose, "Modality", "") != "RTDOSE":
        raise InputError(f"The dose {names['dose']} is DICOM but not an RTDOSE (Modality "
                         f"{getattr(sources.dose, 'Modality', '')}).")
    patients = {str(getattr(h, "PatientID", "")) for h in (sources.postop[0], sources.event[0], sources.dose)}
    if len(patients) > 1:
        raise InputError(f"The DICOM inputs belong to different patients ({', '.join(sorted(patients))}); "
                         "the results can join only one patient's record.")
    return sources


def check_on_grid(image: sitk.Image, sources: DicomSources, what: str) -> None:
    """Refuse an image that is not on the post-op series' grid (the results' frames are that series' slices)."""
    first = sources.postop[0]
    origin = np.array([float(v) for v in first.ImagePositionPatient])
    orientation = np.array([float(v) for v in first.ImageOrientationPatient])
    spacing = [float(v) for v in first.PixelSpacing]
    direction = np.array(image.GetDirection()).reshape(3, 3)
    same = (image.GetSize() == (int(first.Columns), int(first.Rows), len(sources.postop))
            and np.allclose(image.GetOrigin(), origin, atol=GRID_TOLERANCE)
            and np.allclose(direction[:, 0], orientation[:3], atol=GRID_TOLERANCE)
            and np.allclose(direction[:, 1], orientation[3:], atol=GRID_TOLERANCE)
            and np.allclose(image.GetSpacing()[:2], spacing[::-1], atol=GRID_TOLERANCE))
    if not same:
        raise InputError(f"The {what} is not on the post-op DICOM series' grid (size {image.GetSize()}, origin "
                         f"{np.round(image.GetOrigin(), 2).tolist()} vs {len(sources.postop)} slices of "
                         f"{first.Columns}×{first.Rows} from {np.round(origin, 2).tolist()}); it cannot be "
                         "written as a derived object of that series.")


# --------------------------------------------------------------------------- the objects


def _new_uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


def parametric_map(heatmap: sitk.Image, sources: DicomSources, series_uid: str) -> Any:
    """The heatmap (drop in the predicted class's probability) as a float Parametric Map on the post-op grid."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    check_on_grid(heatmap, sources, "heatmap")
    values = sitk.GetArrayFromImage(heatmap).astype(np.float32)
    low, high = float(values.min()), float(values.max())
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="occlusion", lut_explanation="Drop in predicted-class probability when occluded",
        unit=codes.UCUM.NoUnits, value_range=(low, high if high > low else low + 1.0), slope=1.0, intercept=0.0,
        quantity_definition=_local("occlusion-sensitivity", "Occlusion sensitivity"))
    pm = hd.pm.ParametricMap(
        source_images=sources.postop, pixel_array=values, series_instance_uid=series_uid,
        series_number=SERIES_NUMBERS["heatmap"], sop_instance_uid=_new_uid(), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name="RICE-NET occlusion sensitivity",
        software_versions=software_version(), device_serial_number="none", contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping], content_label="HEATMAP", content_description="RICE-NET occlusion heatmap",
        # LINEAR_EXACT: the map's values span less than 1, which a plain LINEAR window may not be.
        voi_lut_transformations=[hd.VOILUTTransformation(
            window_center=(low + high) / 2, window_width=max(high - low, 1e-6), voi_lut_function="LINEAR_EXACT")])
    pm.BodyPartExamined = str(getattr(sources.postop[0], "BodyPartExamined", "") or "BRAIN")
    return pm


def isodose_regions(dose_gy: sitk.Image, reference: sitk.Image, prescription_gy: float,
                    levels: Sequence[float]) -> list[tuple[str, np.ndarray]]:
    """(label, mask on the reference grid) for each isodose level: dose ≥ level × prescription."""
    from .dose_overlap import TOLERANCE_GY
    from .resampling import Geometry, resample_to

    # Resampled as dose_overlap resamples it, so the regions are the volumes prediction.json reports.
    gy = sitk.GetArrayFromImage(resample_to(dose_gy, Geometry.from_image(reference), interpolator="linear", default=0.0))
    return [(f"{100 * level:g} % isodose ({level * prescription_gy:.1f} Gy)",
             gy >= level * prescription_gy - TOLERANCE_GY) for level in sorted(levels)]


def segmentation(regions: Sequence[tuple[str, np.ndarray]], lesion: np.ndarray | None, sources: DicomSources,
                 reference: sitk.Image, series_uid: str) -> Any:
    """Isodose regions (and the lesion) as one binary Segmentation on the post-op grid."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    check_on_grid(reference, sources, "reference grid")
    algorithm = hd.AlgorithmIdentificationSequence(name="RICE-NET", family=codes.cid7162.ArtificialIntelligence,
                                                   version=__version__)
    descriptions, masks = [], []
    for label, mask in regions:
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=len(descriptions) + 1, segment_label=label,
            segmented_property_category=codes.SCT.SpatialAndRelationalConcept,
            segmented_property_type=codes.DCM.Isodose, algorithm_type="AUTOMATIC", algorithm_identification=algorithm))
        masks.append(mask)
    if lesion is not None:
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=len(descriptions) + 1, segment_label="lesion",
            segmented_property_category=codes.cid7150.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion, algorithm_type="MANUAL"))
        masks.append(lesion)
    stacked = np.stack([np.asarray(m, dtype=bool) for m in masks], axis=-1).astype(np.uint8)
    return hd.seg.Segmentation(
        source_images=sources.postop, pixel_array=stacked, segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=series_uid, series_number=SERIES_NUMBERS["regions"],
        sop_instance_uid=_new_uid(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name="RICE-NET dose regions", software_versions=software_version(),
        device_serial_number="none", omit_empty_frames=False, content_label="REGIONS",
        content_description="RICE-NET isodose regions and lesion")


def _probabilities(values: Mapping[str, float], prefix: str, what: str) -> list[Any]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return [hd.sr.Measurement(name=_local(f"{prefix}{name}", f"{what} of {CLASS_DISPLAY.get(name, name)}"),
                              value=float(p), unit=codes.UCUM.NoUnits) for name, p in values.items()]


def verdict_code(label: str) -> Any:
    """The coded verdict: SNOMED's 'Recurrence of tumor'; RICE in the local scheme (SNOMED has no such concept)."""
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    if label == "recurrence":
        return CodedConcept.from_code(codes.SCT.RecurrenceOfTumor)
    return _local(label, CLASS_DISPLAY.get(label, label))


#: UCUM codes of the quality gates' units (ratios and scores have no unit: UCUM "1").
GATE_UNITS = {"ml": ("ml", "milliliter"), "Gy": ("Gy", "Gy")}


def _gate_items(gates: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[Any]]:
    import highdicom as hd
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    measurements, states = [], []
    for gate in gates:
        name = str(gate["name"])
        if gate.get("value") is not None:
            value, meaning = GATE_UNITS.get(str(gate.get("unit")), ("1", "no units"))
            measurements.append(hd.sr.Measurement(name=_local(f"gate-{name}", f"quality gate {name} ({gate['unit']})"),
                                                  value=float(gate["value"]),
                                                  unit=codes.UCUM.NoUnits if value == "1" else CodedConcept(value, "UCUM", meaning)))
        states.append(hd.sr.QualitativeEvaluation(name=_local(f"gate-{name}-state", f"quality gate {name} state"),
                                                  value=_local(f"state-{gate['state']}", str(gate["state"]))))
    return measurements, states


def structured_report(data: Mapping[str, Any], sources: DicomSources, series_uid: str,
                      bundle_sha256: str = "") -> Any:
    """The prediction (``prediction.json``'s content) as a TID 1500 Measurement Report in a Comprehensive 3D SR."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    checksum = bundle_sha256 or str(data.get("bundle_sha256", ""))
    algorithm = hd.sr.AlgorithmIdentification(
        name="RICE-NET", version=software_version(),
        parameters=[f"bundle_id={data.get('bundle_id', '')}", f"bundle_sha256={checksum}"])
    source_images = [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in (sources.postop[0], sources.event[0])]
    label = str(data["label"])
    ensemble = _probabilities(data["probabilities"], "p-", "Mean probability")
    calibrated = data.get("calibrated_probability")
    if calibrated:
        ensemble += _probabilities(calibrated, "calibrated-p-", "Calibrated probability")
    votes = data.get("votes", {})
    if label in votes:
        ensemble.append(hd.sr.Measurement(name=_local("votes", "Fold models voting for the verdict"),
                                          value=float(votes[label]), unit=codes.UCUM.NoUnits))
    groups = [hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=_new_uid(), identifier="ensemble"),
        algorithm_id=algorithm, measurements=ensemble, source_images=source_images,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=_local("verdict", "RICE-NET verdict"),
                                                             value=verdict_code(label))])]
    for fold in data.get("folds", []):
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=_new_uid(), identifier=f"fold {fold['fold']}"),
            algorithm_id=algorithm, measurements=_probabilities(fold["probabilities"], "p-", "Fold probability"),
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=_local("verdict", "RICE-NET verdict"),
                                                                 value=verdict_code(str(fold["label"])))]))
    gates = (data.get("quality") or {}).get("gates") or []
    if gates:
        measurements, states = _gate_items(gates)
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=_new_uid(), identifier="quality gates"),
            algorithm_id=algorithm, measurements=measurements or None, qualitative_evaluations=states))
    observer = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_new_uid(), name="RICE-NET", manufacturer_name=MANUFACTURER, model_name=software_version())))
    report = hd.sr.MeasurementReport(observation_context=observer, procedure_reported=codes.LN.BrainMRI,
                                     imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=sources.evidence(), content=report[0], series_instance_uid=series_uid,
        series_number=SERIES_NUMBERS["report"], sop_instance_uid=_new_uid(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = "RICE-NET result"
    return sr


def declare_scheme(dataset: Any) -> None:
    """Name the local coding scheme in the object (SOP Common's Coding Scheme Identification)."""
    from pydicom.dataset import Dataset

    scheme = Dataset()
    scheme.CodingSchemeDesignator, scheme.CodingSchemeName = SCHEME, "RICE-NET local concepts"
    scheme.CodingSchemeResponsibleOrganization = "RICE-NET project"
    dataset.CodingSchemeIdentificationSequence = [scheme]


def export_dicom(out: str | os.PathLike, data: Mapping[str, Any], sources: DicomSources, reference: sitk.Image, *,
                 heatmap: sitk.Image | None = None, dose_gy: sitk.Image | None = None, prescription_gy: float = 60.0,
                 levels: Sequence[float] = (), lesion: np.ndarray | None = None, bundle_sha256: str = "",
                 overwrite: bool = False) -> dict[str, Path]:
    """Write the Parametric Map (with a heatmap), the Segmentation (with levels or a lesion) and the SR into ``out``.

    ``data`` is ``prediction.json``'s content; ``reference`` the post-op grid; ``lesion`` a mask on that grid.
    Everything is built first, then the folder is moved into place at once.
    """
    from .atomic import atomic_directory

    check_on_grid(reference, sources, "reference grid")
    objects: dict[str, Any] = {}
    if heatmap is not None:
        objects["heatmap"] = parametric_map(heatmap, sources, _new_uid())
    regions = isodose_regions(dose_gy, reference, prescription_gy, levels) if dose_gy is not None and levels else []
    if regions or lesion is not None:
        objects["regions"] = segmentation(regions, lesion, sources, reference, _new_uid())
    objects["report"] = structured_report(data, sources, _new_uid(), bundle_sha256)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for key, dataset in objects.items():
            if key != "regions":  # the Segmentation uses standard codes only
                declare_scheme(dataset)
            dataset.save_as(tmp / FILES[key], enforce_file_format=True)
    return {key: Path(out) / FILES[key] for key in objects}


def export_prediction(out: str | os.PathLike, prediction: Any, data: Mapping[str, Any], sources: DicomSources,
                      dose: sitk.Image | str | os.PathLike, *, lesion: sitk.Image | None = None,
                      lesion_space: str = "reference", levels: Sequence[float] | None = None,
                      overwrite: bool = False) -> dict[str, Path]:
    """:func:`export_dicom` for a prediction of :func:`~RICENetLib.inference.predict_case` (the CLI, the module).

    The dose is read in Gy as preprocessing read it and the isodose levels are fractions of the bundle's
    prescription (default: those of ``dose_overlap``); ``lesion`` (a mask, ``lesion_space`` as for
    ``--lesion-space``) is moved onto the post-op grid.
    """
    from .dose_overlap import DEFAULT_LEVELS, lesion_mask, prediction_dose_gy
    from .resampling import Geometry, resample_to

    reference = prediction.reference
    dose_gy, prescription = prediction_dose_gy(prediction, dose)
    on_reference = None
    if lesion is not None:
        transform = prediction.event_to_reference if lesion_space == "event" else None
        moved = resample_to(lesion_mask(lesion), Geometry.from_image(reference), transform=transform,
                            interpolator="nearest", default=0.0)
        on_reference = sitk.GetArrayFromImage(moved) != 0
    return export_dicom(out, data, sources, reference, heatmap=prediction.occlusion, dose_gy=dose_gy,
                        prescription_gy=prescription, levels=DEFAULT_LEVELS if levels is None else levels,
                        lesion=on_reference, bundle_sha256=getattr(prediction, "bundle_sha256", ""),
                        overwrite=overwrite)
