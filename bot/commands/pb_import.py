"""`gridbot import FILE [--out NEW.hjson] [--strict]`: a Passivbot v7 config as ours.

Reads Passivbot's JSON or hjson config, carries over every key that has a gridbot equivalent
with the same meaning (:mod:`bot.passivbot_import`), validates the result as a gridbot config
and prints it as hjson on stdout, or writes it to ``--out`` (a new file: never overwritten).
Every key it cannot carry over is named on stderr, one line each; that is exit 0, or exit 2
with ``--strict`` (nothing is written then).
"""

from __future__ import annotations

import argparse
import sys

import hjson

from bot import inputs
from bot.config import parse_config, read_hjson
from bot.errors import ConfigError
from bot.passivbot_import import convert

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import",
        help="turn a Passivbot v7 config into a gridbot config",
        description="Turn a Passivbot v7 config (JSON or hjson) into a gridbot config: "
        "printed as hjson, or written to --out. Every key that cannot be carried over is "
        "named on stderr.",
    )
    p.add_argument("file", metavar="FILE", help="the Passivbot v7 config")
    p.add_argument("--out", type=inputs.new_file, metavar="NEW.hjson",
                   help="write the config to this new file instead of stdout")  # fmt: skip
    p.add_argument("--strict", action="store_true",
                   help="a key that cannot be carried over is an error (exit 2)")  # fmt: skip
    p.set_defaults(run=run)


def render(config: dict, source: str) -> str:
    """Our config as hjson, with a header saying where it came from."""
    head = f"# imported from Passivbot config {source} by `gridbot import`\n"
    return head + hjson.dumps(config, indent=2) + "\n"


def run(args: argparse.Namespace) -> int:
    data = read_hjson(args.file)
    if not isinstance(data, dict) or not isinstance(data.get("bot"), dict):
        raise ConfigError(f"{args.file}: not a Passivbot v7 config (no 'bot' section)")
    ours, notes = convert(data)
    parse_config(ours, f"{args.file} (imported)")  # valid as ours; else names the key
    if notes and args.strict:
        raise ConfigError(
            f"{args.file}: --strict refuses to import it: {len(notes)} key(s) cannot be "
            f"carried over: " + "; ".join(notes)
        )
    for note in notes:
        print(f"gridbot import: not carried over: {note}", file=sys.stderr)
    text = render(ours, args.file)
    if args.out:
        try:
            with open(args.out, "x", encoding="utf-8") as f:
                f.write(text)
        except FileExistsError:
            raise ConfigError(f"--out {args.out!r} already exists; give a new file name") from None
        print(f"gridbot import: wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
