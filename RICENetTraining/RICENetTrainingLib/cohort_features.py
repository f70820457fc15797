"""The training cohort's pooled network features, for the bundle's out-of-distribution reference.

After the last fold, every fold model (its kept weights, eval mode, no
augmentation) reads every patient of the cohort once: the features and the
shrunk covariance of :mod:`RICENetLib.ood` are computed from them and sealed in
the bundle. That is ``folds × patients`` forward passes without gradients, a
small share of one training epoch per fold (an epoch of ``n`` patients also
runs the backward pass): 400 passes for the paper's 80 patients.

Features of *all* patients are kept (not only each fold's training patients):
the training patients' fit the fold's covariance, the validation patients'
give the out-of-fold reference distances a new patient is compared with.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from RICENetLib.progress import as_progress


def out_of_distribution_reference(results: Sequence[Any], data: Any, params: Any, device: torch.device,
                                  progress=None, cancel=None) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """:func:`RICENetLib.ood.fit_reference` for finished folds (``FoldResult``s) on the loaded cohort ``data``.

    ``None`` when a fold trained on fewer than two patients (no covariance):
    the bundle is then written without features and the gate says it is not available.
    """
    from RICENetLib.model import build_network
    from RICENetLib.ood import cohort_features, fit_reference

    if min(len(r.train_patients) for r in results) < 2:
        return None
    report = as_progress(progress, cancel)
    channels = data.channels(params.modalities)
    images = [image[channels] for image in data.images]
    models = []
    for result in results:
        network = build_network(params.network_architecture())
        network.load_state_dict(result.state_dict)
        models.append(network.to(device))
    features = cohort_features(models, images, device, batch_size=params.batch_size, progress=report)
    folds = [{"index": r.fold, "train_patients": r.train_patients, "validation_patients": r.validation_patients}
             for r in results]
    return fit_reference(features, [case.patient_id for case in data.cases], folds)
