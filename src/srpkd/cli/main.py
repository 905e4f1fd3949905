"""``srpkd`` command line: one sub-command per file in this folder.

Each sub-command module exposes ``register(subparsers)``, which adds its parser
and sets ``func``. A :class:`SrpkdError` becomes one ``srpkd: error: ...`` line
on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys

from .._version import __version__
from ..errors import SrpkdError
from . import eval as eval_
from . import data, export, import_, info, profile, relmap, report, train, translate

# in the order --help lists them
COMMANDS = [info, import_, data, train, eval_, profile, report, relmap, export, translate]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + error
        raise SrpkdError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="srpkd", description="Distil image-to-image GAN generators into small students (SRP-KD).")
    parser.add_argument("--version", action="version", version=f"srpkd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr
        )
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except SrpkdError as e:
        print(f"srpkd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("srpkd: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
