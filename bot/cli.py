"""`gridbot` command line: one sub-command per module in ``bot.commands``.

Each command module exposes ``add_parser(subparsers) -> None`` and ``run(args) -> int``.
Human output goes to stderr; ``--json`` output is one JSON object on stdout.

Exit codes: 0 done, 2 bad input (a flag, a config, a data or key file: one message naming it,
never a traceback), 130 interrupted, 1 a failure that is not the input's fault (an internal
error is one line too; ``GRIDBOT_DEBUG=1`` shows its traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import NoReturn

from bot.errors import GridbotError

COMMANDS = (
    "risk",
    "backtest",
    "download",
    "optimize",
    "live",
    "venue",
    "replay",
    "status",
    "stress",
    "vault",
    "exchange-sim",
    "soak",
    "import",
)
# Commands whose module is not named after them (``import`` is a Python keyword).
_MODULES = {"import": "pb_import"}


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``gridbot venue: error: argument --speed: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="gridbot",
        description="Grid trading bot for USDT-margined perpetual futures.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod_name = f"bot.commands.{_MODULES.get(name, name.replace('-', '_'))}"
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                continue  # command not built yet
            raise
        module.add_parser(sub)
    return parser


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:500]


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = f"gridbot {args.command}"
    try:
        code = args.run(args)
    except GridbotError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # `gridbot ... --json | head`: the reader left; nothing to say
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- keep the exit flush quiet
        except OSError:
            pass
        code = 0
    except OSError as exc:  # a file or folder the system refused: name it, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{name}: error: {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)
        code = 2
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if os.environ.get("GRIDBOT_DEBUG"):
            traceback.print_exc()
        print(
            f"{name}: internal error: {type(exc).__name__}: {_one_line(exc)} "
            f"(a bug in gridbot; GRIDBOT_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
