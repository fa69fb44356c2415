"""The live bot's log file: one JSON object per line, rotated by size.

Every record of the ``gridbot`` loggers at INFO and above goes to the file as
``{"time": ISO-8601 UTC, "level", "logger", "message"}`` plus, for the bot's own events, an
``"event"`` name and a ``"data"`` object (a fill, an order, the heartbeat's numbers). Secrets are
redacted before any handler sees a record (:func:`bot.live.credentials.install_redaction`).
"""

from __future__ import annotations

import logging
import logging.handlers
import time
from pathlib import Path
from typing import Any

import orjson

__all__ = ["JsonLinesFormatter", "heartbeat_fields", "install_log_file"]


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if event is not None:
            line["event"] = event
        data = getattr(record, "data", None)
        if data is not None:
            line["data"] = data
        if record.exc_info and record.exc_info[1] is not None:
            line["exception"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode()


def install_log_file(
    path: str | Path, max_mb: float = 10.0, backups: int = 5, logger: str = "gridbot"
) -> logging.Handler:
    """Add a rotating JSON-lines handler for ``logger`` (and its children) at INFO; returns it
    (``logging.getLogger(logger).removeHandler(h); h.close()`` to take it away)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        p, maxBytes=int(max_mb * 1024 * 1024), backupCount=backups, encoding="utf-8"
    )
    handler.setLevel(logging.INFO)
    handler.setFormatter(JsonLinesFormatter())
    logging.getLogger(logger).addHandler(handler)
    return handler


def heartbeat_fields(status: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(message, data) of a heartbeat line from a status dict: balance, equity, and each
    position's wallet exposure against its limit."""
    acc = status["account"]
    positions = []
    parts = []
    for c in status["coins"]:
        for side in ("long", "short"):
            s = c[side]
            if s["size"] > 0:
                positions.append(
                    {
                        "symbol": c["symbol"],
                        "side": side,
                        "size": s["size"],
                        "price": s["price"],
                        "wallet_exposure": s["wallet_exposure"],
                        "wallet_exposure_limit": s["wallet_exposure_limit"],
                        "liquidation_distance_pct": c["liquidation_distance_pct"],
                    }
                )
                parts.append(
                    f"{c['symbol']} {side} WE {_fmt(s['wallet_exposure'])}"
                    f"/{_fmt(s['wallet_exposure_limit'])}"
                )
    data = {
        "balance": acc["balance"],
        "equity": acc["equity"],
        "n_fills": acc["n_fills"],
        "positions": positions,
        "streams": status.get("streams", {}),
    }
    msg = f"heartbeat: balance {_fmt(acc['balance'])}, equity {_fmt(acc['equity'])}; " + (
        "; ".join(parts) if parts else "no positions"
    )
    return msg, data


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}" if abs(x) < 10 else f"{x:.2f}"
