"""Secrets out of text and logs: every layer may need it (the exchange adapter redacts error
messages that echo a signed request), so it lives below them all.

:func:`install_redaction` wraps the logging record factory, so every record from every logger
(ours, ccxt's, aiohttp's, websockets') has the secrets replaced before any handler sees it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable

__all__ = ["REDACTED", "install_redaction", "redact"]

REDACTED = "***"

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
