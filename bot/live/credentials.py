"""API keys: read from the environment or a mode-0600 key file; never printed or logged
(:mod:`bot.redaction` keeps them out of every log record)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from bot.config import LiveConfig
from bot.errors import ConfigError
from bot.inputs import MAX_KEY_FILE_BYTES, decode_text, read_file
from bot.redaction import REDACTED, install_redaction, redact

__all__ = ["REDACTED", "install_redaction", "load_credentials", "redact"]


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
            detail = (
                f" ({exc.msg} at line {exc.lineno})"
                if isinstance(exc, json.JSONDecodeError)
                else ""
            )
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
