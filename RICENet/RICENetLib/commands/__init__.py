"""Subcommands of the ``ricenet`` command line (see :mod:`RICENetLib.cli`)."""
