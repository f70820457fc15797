"""The ``ricenet`` command line: one subcommand per module in :data:`COMMANDS`.

Each subcommand module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Subcommands are imported only when used or listed, so
``ricenet info`` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from types import ModuleType
from typing import Sequence

from . import __version__
from .errors import Cancelled, RICENetError

#: Subcommand modules in the order ``ricenet --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "RICENetLib.commands.demo",
    "RICENetLib.commands.info",
    "RICENetLib.commands.synth",
    "RICENetLib.commands.preprocess",
    "RICENetTrainingLib.commands.train",
    "RICENetTrainingLib.commands.ablate",
    "RICENetLib.commands.predict",
    "RICENetLib.commands.bundle",
)


def _available_commands() -> list[ModuleType]:
    modules = []
    for name in COMMANDS:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as error:
            if error.name != name:  # a real missing dependency, not a command not yet written
                raise
    return modules


#: Errors of the machine, not of the program, even when no file name comes with them (a full disk on write()).
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                                errno.EIO})


def os_error_message(error: OSError) -> str | None:
    """One line for an operating-system error a user can act on (it names the file), or ``None`` for
    one that is more likely a programming error (no file, an unusual errno): that keeps its traceback."""
    if error.filename is None and error.errno not in ENVIRONMENT_ERRNOS:
        return None
    text = error.strerror or str(error)
    names = [str(n) for n in (error.filename, error.filename2) if n is not None]
    return f"{text}: {' -> '.join(names)}" if names else text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ricenet",
        description="RICE-NET: tumour recurrence vs radiation-induced contrast enhancement (RICE) "
        "from post-op MRI, event MRI and the radiotherapy dose map.",
    )
    parser.add_argument("--version", action="version", version=f"ricenet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debugging messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _available_commands():
        command = sub.add_parser(module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP))
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except Cancelled as error:
        print(f"ricenet {args.command}: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"ricenet {args.command}: interrupted", file=sys.stderr)
        return 130
    except RICENetError as error:
        print(f"ricenet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        message = os_error_message(error)
        if message is None:
            raise
        print(f"ricenet {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
