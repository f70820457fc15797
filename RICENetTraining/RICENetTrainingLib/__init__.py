"""RICE-NET training engine: cohort folds, augmentation, the training loop,
metrics, checkpoints, bundle export and the modality ablation. No Qt, no MRML.
"""
