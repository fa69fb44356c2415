"""API keys: read from the environment or a mode-0600 key file; never printed or logged.

:func:`install_redaction` wraps the logging record factory, so every record from every logger
(ours, ccxt's, aiohttp's, websockets') has the secrets replaced before any handler sees it.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from bot.config import LiveConfig
from bot.errors import ConfigError

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
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"live.key_file = {str(path)!r}: not a JSON object: {exc}") from None
        key = data.get("apiKey") or data.get("api_key") or data.get("key")
        secret = data.get("secret") or data.get("api_secret")
        if not key or not secret:
            raise ConfigError(f"live.key_file = {str(path)!r}: needs fields apiKey and secret")
        return str(key), str(secret)
    key, secret = os.environ.get(live.api_key_env), os.environ.get(live.api_secret_env)
    if not key or not secret:
        raise ConfigError(
            f"API keys: set the environment variables {live.api_key_env} and "
            f"{live.api_secret_env} (live.api_key_env / live.api_secret_env), or live.key_file"
        )
    return key, secret


def redact(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, REDACTED)
    return text


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
