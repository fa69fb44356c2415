"""One place where each kind of user input is checked, so the commands cannot drift apart.

Every check here either returns the clean value or raises an error that names what is wrong
(the file, the flag and value, the key); the CLI turns it into exit code 2 and one message.

- **Files we read** (configs, key files, candle files): :func:`read_file` opens without
  blocking, refuses anything that is not a regular file (``/dev/zero``, a FIFO, a folder) and
  anything larger than the kind's limit, and never reads more than the limit; :func:`decode_text`
  refuses binary and UTF-16/32 text with a message saying so.
- **Folders we write** (``--out``, ``backtest.results_dir``, ``live.state_dir``, ``--results``):
  :func:`writable_dir` refuses an existing file, system folders (``/proc``, ``/sys``, ``/dev``),
  the source tree and places the user cannot write.
- **Command-line values**: argparse ``type=`` callables (:func:`number`, :func:`integer`,
  :func:`date_text`, :func:`symbols`, :func:`url`) so a bad flag is refused while parsing, as
  ``argument --speed: 'nan': must be a finite number``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from bot.errors import ConfigError, GridbotError

__all__ = [
    "MAX_CANDLE_FILE_BYTES",
    "MAX_CONFIG_BYTES",
    "MAX_KEY_FILE_BYTES",
    "MAX_NESTING",
    "SOURCE_ROOT",
    "check_symbols",
    "check_url",
    "date_text",
    "decode_text",
    "integer",
    "number",
    "parse_date_ms",
    "parse_symbols",
    "read_file",
    "source_tree_part",
    "storage_url",
    "study_name",
    "symbols",
    "url",
    "writable_dir",
]

MAX_CONFIG_BYTES = 1 << 20  # a config is a few KB; a megabyte is not a config
MAX_KEY_FILE_BYTES = 64 << 10
MAX_CANDLE_FILE_BYTES = 4 << 30  # raw and, for gzip, decompressed: years of 1m candles fit
MAX_NESTING = 32  # configs nest 3 levels; deeper is a broken or hostile file

SOURCE_ROOT = Path(__file__).resolve().parents[1]
# Folders of the project that hold code, configs or bundled data: never written by a run.
_SOURCE_PARTS = ("bot", "backtest", "tests", "benchmarks", "configs", "data/sample", ".git")
_SYSTEM_DIRS = (Path("/proc"), Path("/sys"), Path("/dev"))

_SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9_.-]{0,39}")
_CCXT_SYMBOL_RE = re.compile(r"^([A-Z0-9]+)/([A-Z0-9]+)(?::[A-Z0-9]+)?$")  # BTC/USDT:USDT


# --------------------------------------------------------------------------- files we read


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_file(
    path: str | Path, *, what: str, limit: int, error: type[GridbotError] = ConfigError
) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; never blocks, never reads more.

    Raises ``error`` naming the file when it cannot be opened, is not a regular file (a device
    such as /dev/zero, a pipe, a folder) or is larger than ``limit``.
    """
    p = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise error(f"{p}: cannot read {what}: {reason}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{p}: cannot read {what}: it is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise error(
                f"{p}: {what} is {st.st_size:,} bytes, more than the {limit:,} allowed; "
                f"is it the right file?"
            )
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # /proc files report size 0: read, but never past the limit
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise error(f"{p}: {what} is more than the {limit:,} bytes allowed")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def decode_text(raw: bytes, source: str, what: str, error: type[GridbotError] = ConfigError) -> str:
    """UTF-8 text (a UTF-8 BOM is dropped); binary and UTF-16/32 files are refused, saying so."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raise error(f"{source}: {what} is {name} text; save it as UTF-8")
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise error(
            f"{source}: {what} is binary, not text (a NUL byte on line {line}; UTF-16 text "
            f"without a BOM looks like this too: save it as UTF-8)"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise error(
            f"{source}: {what} is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); "
            f"save it as UTF-8"
        ) from None


# --------------------------------------------------------------------------- folders we write


def source_tree_part(path: str | Path) -> str | None:
    """The project folder (``bot``, ``configs``, ...) that ``path`` lies in, or the project root
    itself; None when the path is outside the source tree."""
    try:
        p = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if p == SOURCE_ROOT:
        return "the project folder itself"
    for part in _SOURCE_PARTS:
        if p.is_relative_to(SOURCE_ROOT / part):
            return f"{part}/"
    return None


def writable_dir(path: str | Path, where: str, error: type[GridbotError] = ConfigError) -> Path:
    """``path`` as a folder a run may create and write into; raises ``error`` naming ``where``
    (a flag or a config key) and the reason otherwise. Nothing is created here."""
    shown = f"{where} {str(path)!r}"
    try:
        p = Path(path).expanduser()
        resolved = p.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise error(f"{shown}: not a usable folder: {exc}") from None
    for sysdir in _SYSTEM_DIRS:
        if resolved.is_relative_to(sysdir):
            raise error(f"{shown}: {sysdir} is a system folder; choose a folder of your own")
    part = source_tree_part(resolved)
    if part is not None:
        raise error(
            f"{shown}: inside the source tree ({part} of {SOURCE_ROOT}); results never go there: "
            f"use e.g. 'results'"
        )
    probe = resolved
    try:
        while not probe.exists():
            if probe.is_symlink():
                raise error(f"{shown}: {probe} is a broken symbolic link")
            probe = probe.parent
        if not probe.is_dir():
            what = "" if probe == resolved else f" ({probe})"
            raise error(f"{shown}: is a file, not a folder{what}")
    except OSError as exc:
        raise error(f"{shown}: not a usable folder: {exc.strerror or exc}") from None
    if not os.access(probe, os.W_OK | os.X_OK):
        raise error(f"{shown}: cannot write into {probe} (permission denied or read-only)")
    return p


# --------------------------------------------------------------------------- command-line values


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        left = ">" if lo_open else ">="
        right = "<" if hi_open else "<="
        return f"{left} {lo:g} and {right} {hi:g}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return "a finite number"


def number(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    hint: str = "",
) -> Callable[[str], float]:
    """An argparse ``type``: a finite float in the range (NaN and inf are refused)."""
    allowed = _range_text(lo, hi, lo_open, hi_open) + (f" ({hint})" if hint else "")

    def parse(text: str) -> float:
        try:
            x = float(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number; must be {allowed}"
            ) from None
        if not math.isfinite(x):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number, {allowed}")
        if (
            (lo is not None and (x <= lo if lo_open else x < lo))
            or (hi is not None and (x >= hi if hi_open else x > hi))
        ):  # fmt: skip
            raise argparse.ArgumentTypeError(f"{text!r}: must be {allowed}")
        return x

    parse.__name__ = "number"
    return parse


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number in ``[lo, hi]``."""
    allowed = _range_text(lo, hi, False, False)

    def parse(text: str) -> int:
        try:
            x = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text[:40]!r} is not a whole number; must be {allowed}"
            ) from None
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            raise argparse.ArgumentTypeError(f"{text[:40]!r}: must be {allowed}")
        return x

    parse.__name__ = "integer"
    return parse


_INT_RE = re.compile(r"[+-]?\d+")
# Integers below this (1973-03-03) are almost surely seconds or a compact date like 20210519,
# which as ms would silently mean January 1970.
MIN_PLAUSIBLE_MS = 100_000_000_000
MAX_DATE_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last time datetime knows


def parse_date_ms(text: str) -> int:
    """``2021-05-19``, ``2021-05-19T13:10``, ``2021-05-19 13:10:00`` (UTC) or ms -> ms.

    Raises ConfigError naming the text: not understood, an integer that looks like seconds,
    or a time outside 1970 .. 9999."""
    s = str(text).strip()
    if _INT_RE.fullmatch(s):
        if len(s) > 20:
            value = MAX_DATE_MS + 1
        else:
            value = int(s)
        if abs(value) < MIN_PLAUSIBLE_MS:
            raise ConfigError(
                f"date {text!r}: an integer is read as milliseconds since 1970 and this one is "
                f"before 1973 (seconds?); give ms like 1621382400000 or a date like 2021-05-19"
            )
        if not 0 <= value <= MAX_DATE_MS:
            raise ConfigError(
                f"date {text[:40]!r}: milliseconds outside 1970 .. 9999; give ms like "
                f"1621382400000 or a date like 2021-05-19"
            )
        return value
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", s):
            raise ValueError(s)
        dt = datetime.fromisoformat(s)
        if dt.tzinfo is None:  # naive means UTC: exchanges and our files speak UTC
            dt = dt.replace(tzinfo=UTC)
        ms = int(round(dt.timestamp() * 1000))
    except (ValueError, OverflowError, OSError):
        raise ConfigError(
            f"date {text[:60]!r} is not understood; use YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] (UTC) "
            f"or an integer timestamp in ms"
        ) from None
    if not 0 <= ms <= MAX_DATE_MS:
        raise ConfigError(f"date {text[:60]!r}: outside 1970 .. 9999")
    return ms


# Flags several commands share: one definition each, the config's ranges where it has them.
SPEED = number(0, 1e6, lo_open=True, hint="1 = real time, 60 = a minute per second")
BALANCE = number(0, 1e12, lo_open=True, hint="USDT")
MAKER_FEE = number(-0.001, 0.01, hint="a fraction; negative: rebate")
TAKER_FEE = number(0, 0.01, hint="a fraction")
FUNDING_RATE = number(-0.01, 0.01, hint="per 8 hours")
PORT = integer(0, 65535)
MINUTES = number(0, 1e7, lo_open=True, hint="minutes")


def date_text(text: str) -> str:
    """An argparse ``type``: a date :func:`parse_date_ms` understands (kept as text)."""
    try:
        parse_date_ms(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def check_symbols(syms: list[str] | tuple[str, ...], where: str) -> list[str]:
    """Upper-cased exchange ids (ccxt's ``BTC/USDT:USDT`` becomes ``BTCUSDT``); empty, malformed
    or repeated ones are a ConfigError naming ``where``."""
    syms = [_CCXT_SYMBOL_RE.sub(r"\1\2", str(s).strip().upper()) for s in syms]
    if not syms:
        raise ConfigError(f"{where}: give symbols like BTCUSDT,ETHUSDT")
    for s in syms:
        if not _SYMBOL_RE.fullmatch(s):
            raise ConfigError(
                f"{where}: {s[:50]!r} is not a symbol (letters, digits, '_', '.', '-'; "
                f"at most 40), e.g. BTCUSDT"
            )
    dupes = sorted({s for s in syms if syms.count(s) > 1})
    if dupes:
        raise ConfigError(f"{where}: listed more than once: {', '.join(dupes)}")
    return syms


def parse_symbols(text: str, where: str) -> list[str]:
    """``"btcusdt, ETHUSDT"`` -> ``["BTCUSDT", "ETHUSDT"]``; empty, malformed or repeated
    symbols are a ConfigError naming ``where``."""
    syms = [s for s in str(text).split(",") if s.strip()]
    if not syms:
        raise ConfigError(f"{where}: {text!r}: give symbols like BTCUSDT,ETHUSDT")
    return check_symbols(syms, where)


def symbols(text: str) -> list[str]:
    """An argparse ``type``: comma-separated symbols, upper-cased (see :func:`parse_symbols`)."""
    try:
        return parse_symbols(text, "symbols")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("symbols: ")) from None


def storage_url(text: str) -> str:
    """An argparse ``type``: an SQLAlchemy-style URL (``sqlite:///f.db``, ``postgresql://...``)."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+]*://\S*", text.strip()):
        raise argparse.ArgumentTypeError(
            "not a storage URL; e.g. sqlite:///results/optimize/x.db or "
            "postgresql://user:pw@host/db"
        )  # the text itself is not echoed: it may hold a password
    return text.strip()


def study_name(text: str) -> str:
    """An argparse ``type``: an Optuna study name of letters, digits, '_', '.', '-'."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", text):
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r}: use 1 to 200 letters, digits, '_', '.', '-'"
        )
    return text


def check_url(text: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """``text`` stripped, if it is a URL with one of ``schemes`` and a host; else ValueError."""
    example = f"{schemes[0]}://127.0.0.1:8080"
    try:
        parts = urlsplit(text.strip())
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"{text[:80]!r} is not a URL: {exc}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(
            f"{text[:80]!r} is not a {'/'.join(schemes)} URL with a host, e.g. {example}"
        )
    return text.strip()


def url(text: str) -> str:
    """An argparse ``type``: an http(s) URL with a host, e.g. ``http://127.0.0.1:8080``."""
    try:
        return check_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def new_file(text: str) -> str:
    """An argparse ``type``: a path to write a new file at (its folder exists, nothing is there
    yet: an existing file is never overwritten)."""
    if not text.strip() or "\x00" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file name")
    try:
        p = Path(text).expanduser()
        resolved = p.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a usable path: {exc}") from None
    for sysdir in _SYSTEM_DIRS:
        if resolved.is_relative_to(sysdir):
            raise argparse.ArgumentTypeError(f"{text!r}: {sysdir} is a system folder")
    try:
        if p.exists() or p.is_symlink():
            raise argparse.ArgumentTypeError(f"{text!r} already exists; give a new file name")
        if not resolved.parent.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r}: folder {resolved.parent} does not exist")
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc.strerror or exc}") from None
    if not os.access(resolved.parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: cannot write into {resolved.parent}")
    return text


def depositor(text: str) -> str:
    """An argparse ``type``: a vault depositor's name of letters, digits, '_', '.', '-', '@'."""
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", text):
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r}: use 1 to 64 letters, digits, '_', '.', '-', '@'"
        )
    return text


def share_amount(text: str) -> tuple[str, float]:
    """An argparse ``type``: shares to withdraw: a number of shares, ``P%`` of one's shares, or
    ``all``; returns (``"shares"`` or ``"fraction"``, value)."""
    t = text.strip().lower()
    if t == "all":
        return "fraction", 1.0
    if t.endswith("%"):
        p = number(0.0, 100.0, lo_open=True, hint="a percentage of one's shares")(t[:-1])
        return "fraction", p / 100.0
    return "shares", number(0.0, lo_open=True, hint="shares, P% or all")(t)
