"""``srpkd`` command line: one sub-command per file in this folder.

Each sub-command module exposes ``register(subparsers)``, which adds its parser
and sets ``func``. A :class:`SrpkdError` becomes one ``srpkd: error: ...`` line
on stderr and exit status 2: no terminal colour codes, and no library warnings
around it (Python warnings go to the debug log, shown with ``-v``). An
allocation failure (a huge ``--size``) is one line too, and SIGTERM ends a
command the way Ctrl-C does, so that the temporary file of a write in progress
is removed (training installs its own handlers: finish the step and save).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import warnings

from .._version import __version__
from ..errors import SrpkdError, first_line, is_out_of_memory, strip_ansi
from . import eval as eval_
from . import data, export, import_, info, profile, relmap, report, train, translate

# in the order --help lists them
COMMANDS = [info, import_, data, train, eval_, profile, report, relmap, export, translate]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + error
        raise SrpkdError(f"{self.prog}: {message}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that ``finally`` blocks and atomic writes clean up."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="srpkd", description="Distil image-to-image GAN generators into small students (SRP-KD).")
    parser.add_argument("--version", action="version", version=f"srpkd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (and library warnings)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def _on_sigterm(signum, frame):
    raise Terminated


def _quiet_library_noise(verbose: bool) -> None:
    """Library warnings (torch's weight-loading advice, ONNX exporter notes) go to the debug log, not the terminal."""
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if verbose else logging.ERROR)
    if not verbose:
        warnings.simplefilter("ignore")
        for name in ("torch", "onnxscript", "onnx_ir"):  # their exporters log tracebacks of what they tried at ERROR
            logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with warnings.catch_warnings():
            parser = build_parser()
            args = parser.parse_args(argv)
            logging.basicConfig(
                level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr
            )
            _quiet_library_noise(args.verbose)
            if not getattr(args, "func", None):
                parser.print_help()
                return 2
            return int(args.func(args) or 0)
    except SrpkdError as e:
        print(f"srpkd: error: {' '.join(strip_ansi(str(e)).split())}", file=sys.stderr)
        return 2
    except Terminated:
        print("srpkd: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("srpkd: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        print(f"srpkd: error: out of memory ({first_line(e)[:200]}); try a smaller --size or --batch",
              file=sys.stderr)
        return 2
    finally:
        # the handler first: a SIGTERM that arrives during the rest of the clean-up (a torchrun agent ending the
        # survivors of a dead rank) then ends the process as it would have, not with a Terminated traceback
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        logging.captureWarnings(False)


if __name__ == "__main__":
    sys.exit(main())
