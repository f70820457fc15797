"""RICE-NET training engine: cohort folds, augmentation, the training loop,
metrics, checkpoints, bundle export and the modality ablation. No Qt, no MRML.
"""

#: Learning-rate schedules the engine knows (here, free of torch, for the GUI and the CLI).
LR_SCHEDULES = ("constant", "cosine")
