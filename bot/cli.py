"""`gridbot` command line: one sub-command per module in ``bot.commands``.

Each command module exposes ``add_parser(subparsers) -> None`` and ``run(args) -> int``.
Human output goes to stderr; ``--json`` output is one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bot.errors import GridbotError

COMMANDS = (
    "risk",
    "backtest",
    "download",
    "optimize",
    "live",
    "venue",
    "replay",
    "exchange-sim",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridbot",
        description="Grid trading bot for USDT-margined perpetual futures.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod_name = f"bot.commands.{name.replace('-', '_')}"
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                continue  # command not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
    except GridbotError as exc:
        print(f"gridbot {args.command}: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"gridbot {args.command}: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
