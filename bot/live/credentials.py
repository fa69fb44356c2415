"""API keys: read from the environment or a mode-0600 key file; never printed or logged.

:func:`install_redaction` wraps the logging record factory, so every record from every logger
(ours, ccxt's, aiohttp's, websockets') has the secrets replaced before any handler sees it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from bot.config import LiveConfig
from bot.errors import ConfigError
from bot.inputs import MAX_KEY_FILE_BYTES, decode_text, read_file

__all__ = ["REDACTED", "install_redaction", "load_credentials", "redact"]

REDACTED = "***"


def load_credentials(live: LiveConfig) -> tuple[str, str]:
    """(api key, secret) from ``live.key_file`` (must be mode 0600) or the env vars."""
    if live.key_file:
        path = Path(live.key_file).expanduser()
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError as exc:
            raise ConfigError(
                f"live.key_file = {str(path)!r}: cannot read: {exc.strerror}"
            ) from None
        if mode & 0o077:
            raise ConfigError(
                f"live.key_file = {str(path)!r}: mode {mode:04o} lets others read it; "
                f"run `chmod 600 {path}`"
            )
        where = f"live.key_file = {str(path)!r}"
        try:
            raw = read_file(path, what="key file", limit=MAX_KEY_FILE_BYTES)
        except ConfigError as exc:
            raise ConfigError(f"live.key_file: {exc}") from None
        text = decode_text(raw, where, "the key file")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            detail = f" ({exc.msg} at line {exc.lineno})" if hasattr(exc, "lineno") else ""
            raise ConfigError(
                f'{where}: not JSON{detail}; expected {{"apiKey": ..., "secret": ...}}'
            ) from None
        if not isinstance(data, dict):
            kind = {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
                type(data), "number"
            )
            raise ConfigError(
                f'{where}: holds a JSON {kind}, expected an object {{"apiKey": ..., "secret": ...}}'
            )
        key = data.get("apiKey") or data.get("api_key") or data.get("key")
        secret = data.get("secret") or data.get("api_secret")
        if not key or not secret:
            raise ConfigError(f"{where}: needs fields apiKey and secret")
        if not isinstance(key, str) or not isinstance(secret, str):
            raise ConfigError(f"{where}: apiKey and secret must be text (JSON strings)")
        return str(key), str(secret)
    key, secret = os.environ.get(live.api_key_env), os.environ.get(live.api_secret_env)
    if not key or not secret:
        raise ConfigError(
            f"API keys: set the environment variables {live.api_key_env} and "
            f"{live.api_secret_env} (live.api_key_env / live.api_secret_env), or live.key_file"
        )
    return key, secret


# Session credentials the exchange hands out (Binance's listenKey, in the user stream's URL and
# in REST replies) are as good as a key for reading the account: redacted wherever they show
# up, e.g. in the websockets library's debug log of the request line (`-v`).
_LISTEN_KEY = re.compile(r"""(listenKey["']?\s*[=:]\s*["']?)[A-Za-z0-9_-]{8,}""")


def redact(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, REDACTED)
    return _LISTEN_KEY.sub(rf"\g<1>{REDACTED}", text)


def install_redaction(secrets: Iterable[str]) -> Callable[[], None]:
    """Redact ``secrets`` from every log record from now on; returns an uninstaller."""
    secrets = tuple(s for s in secrets if s)
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return record
        clean = redact(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = redact(str(record.exc_info[1]), secrets)
            if exc_text != str(record.exc_info[1]):
                record.msg = f"{record.msg} ({type(record.exc_info[1]).__name__}: {exc_text})"
                record.exc_info = None
        return record

    logging.setLogRecordFactory(factory)

    def uninstall() -> None:
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(previous)

    return uninstall
