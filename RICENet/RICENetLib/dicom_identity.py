"""Do a case's DICOM inputs belong together? Same patient; the dose in the post-op MRI's frame of reference.

The dose is resampled into the post-op MRI by physical coordinates alone, with
no registration (DESIGN.md): that is right only when both share one DICOM Frame
of Reference. A dose in another frame (the planning CT's, when the MRI was not
exported in it) would land centimetres away and look plausible. The event MRI
is registered to the post-op MRI, so its frame may differ; its patient may not.

The identifiers travel as image metadata set by :mod:`RICENetLib.image_io`
(``PATIENT_ID_KEY``, ``FRAME_OF_REFERENCE_KEY``); a NIfTI/NRRD file or a Slicer
volume has none, and then nothing can be compared.

>>> check_same_patient_and_frame(postop, event, dose, names)      # doctest: +SKIP
"""

from __future__ import annotations

from typing import Mapping

import SimpleITK as sitk

from .errors import InputError


def _value(image: sitk.Image, key: str) -> str:
    return image.GetMetaData(key).strip() if image.HasMetaDataKey(key) else ""


def check_same_patient_and_frame(postop: sitk.Image, event: sitk.Image, dose: sitk.Image,
                                 names: Mapping[str, str]) -> None:
    """Refuse a dose in another frame of reference than the post-op MRI, or an input of another patient.

    ``names`` maps ``postop``/``event``/``dose`` to how messages name each input.
    Only identifiers present on both images are compared.
    """
    from .image_io import FRAME_OF_REFERENCE_KEY, PATIENT_ID_KEY

    reference = _value(postop, PATIENT_ID_KEY)
    for role, image in (("event", event), ("dose", dose)):
        other = _value(image, PATIENT_ID_KEY)
        if reference and other and other != reference:
            raise InputError(f"{names[role]} belongs to patient '{other}', the {names['postop']} to patient "
                             f"'{reference}' (DICOM PatientID); the inputs of one case must be one patient's.")
    frame, dose_frame = _value(postop, FRAME_OF_REFERENCE_KEY), _value(dose, FRAME_OF_REFERENCE_KEY)
    if frame and dose_frame and frame != dose_frame:
        raise InputError(
            f"{names['dose']} is in another DICOM frame of reference ({dose_frame}) than the {names['postop']} "
            f"({frame}), so its coordinates do not match the MRI's and it would be placed wrongly. Use the post-op "
            "MRI exported in the planning frame of reference (registered in the planning system), or register "
            "the dose onto the MRI first (e.g. in 3D Slicer) and save both."
        )
