"""RICE-NET training engine: cohort folds, augmentation, the training loop,
metrics, checkpoints, bundle export and the modality ablation. No Qt, no MRML.
"""

#: Learning-rate schedules the engine knows (here, free of torch, for the GUI and the CLI).
LR_SCHEDULES = ("constant", "cosine")


def check_flip_probability(value: float) -> None:
    """Refuse a mirroring probability outside 0–1 (here, free of torch, so the GUI checks it before a run starts)."""
    from RICENetLib.errors import InputError

    if not 0.0 <= float(value) <= 1.0:
        raise InputError(f"The mirroring probability must lie between 0 and 1 (got {value!r}).")


def check_lr_schedule(name: str) -> None:
    """Refuse an unknown learning-rate schedule (torch-free, like the check above)."""
    from RICENetLib.errors import InputError

    if name not in LR_SCHEDULES:
        raise InputError(f"Unknown learning-rate schedule '{name}'; use {' or '.join(LR_SCHEDULES)}.")
