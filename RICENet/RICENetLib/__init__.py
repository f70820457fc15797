"""RICE-NET engine: tumour recurrence vs radiation-induced contrast enhancement.

Everything here runs without Slicer's Qt layer; only :mod:`RICENetLib.mrml`
knows about MRML. Modules are imported lazily by their users so that importing
the package stays cheap inside Slicer.
"""

__version__ = "0.1.0"

#: Channel names in their fixed order; any modality subset keeps this order.
MODALITIES: tuple[str, ...] = ("postop", "event", "dose")

#: Class names in the order of the network's outputs.
CLASS_NAMES: tuple[str, ...] = ("recurrence", "rice")
