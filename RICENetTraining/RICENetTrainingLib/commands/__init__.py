"""Training subcommands of the ``ricenet`` command line."""
