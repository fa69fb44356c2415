"""`gridbot status [CONFIG] [--url URL] [--json]`: ask a running bot's status API.

For a server without a browser: the same numbers as the status page, as tables on stderr, or
with ``--json`` the API's JSON object on stdout. The address comes from ``--url``, else from the
config's ``live.status_host`` / ``live.status_port``, else http://127.0.0.1:8765. When the
config's token variable (``live.status_token_env``, default GRIDBOT_STATUS_TOKEN) is set, its
token is sent. A bot that cannot be reached is exit code 2 with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from bot import inputs
from bot.errors import GridbotError

__all__ = ["add_parser", "fetch_status", "run"]

DEFAULT_URL = "http://127.0.0.1:8765"


class StatusUnreachable(GridbotError):
    """The bot's status API did not answer."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "status",
        help="print a running bot's status (asks its status API)",
        description="Print the status of a running `gridbot live` (positions, exposure, "
        "distances to bankruptcy and liquidation, orders, streams, events) from its API.",
    )
    p.add_argument("config", nargs="?", help="the bot's config (for live.status_host/port)")
    p.add_argument(
        "--url",
        type=inputs.url,
        help=f"the bot's status address (default: from CONFIG, else {DEFAULT_URL})",
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON object on stdout")
    p.add_argument(
        "--timeout",
        type=inputs.number(0, 600, lo_open=True, hint="seconds"),
        default=5.0,
        help="seconds to wait (default 5)",
    )
    p.set_defaults(run=run)


def _address(args: argparse.Namespace) -> tuple[str, str]:
    """(base URL, token environment variable)."""
    token_env = "GRIDBOT_STATUS_TOKEN"
    if args.config:
        from bot.config import load_config

        live = load_config(args.config).live
        token_env = live.status_token_env
        if args.url:
            return args.url, token_env
        if live.status_port in (None, 0):
            raise GridbotError(
                f"{args.config}: live.status_port = {live.status_port}: no fixed port to ask; "
                "give --url (the bot logs its status page address at start-up)"
            )
        host = live.status_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{live.status_port}", token_env
    return args.url or DEFAULT_URL, token_env


def fetch_status(url: str, token: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    api = url.rstrip("/") + "/api/status"
    req = urllib.request.Request(api, headers={"Accept": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        hint = " (set the token's environment variable)" if exc.code == 401 else ""
        raise StatusUnreachable(f"{api}: HTTP {exc.code}{hint}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusUnreachable(
            f"cannot reach the bot's status API at {api}: {reason}; is `gridbot live` running "
            "with live.status_port set?"
        ) from None
    except ValueError:
        raise StatusUnreachable(f"{api}: the answer is not JSON (not a gridbot?)") from None


def _f(x: Any, digits: int = 6, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}g}{unit}"
    return f"{x}{unit}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f} %"


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def print_tables(st: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
    acc = st["account"]
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(st["time"]))
    mode = "dry run" if st.get("dry_run") else "live"
    t = Table(title=f"gridbot {mode} on {st.get('exchange', '?')}, {when}", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("balance", _f(acc["balance"], 8, " USDT"))
    t.add_row("equity", _f(acc["equity"], 8, " USDT"))
    t.add_row("balance peak", _f(acc["balance_peak"], 8, " USDT"))
    t.add_row("fills / errors", f"{acc['n_fills']} / {acc['errors']}")
    t.add_row("up", _dur(st.get("uptime_seconds")))
    t.add_row("last reconciliation", _dur(st.get("last_reconciliation_age_seconds")) + " ago")
    for name, s in (st.get("streams") or {}).items():
        t.add_row(
            f"{name} stream", ("up" if s["up"] else "DOWN") + f" for {_dur(s['for_seconds'])}"
        )
    hs = st.get("hard_stop") or {}
    if hs.get("enabled"):
        left = hs.get("cooldown_left_minutes")
        halted = ""
        if hs["halted"]:
            halted = " HALTED" + (
                "" if hs.get("restarts_by_itself", True)
                else " (never ends by itself: --reset-hard-stop ends it)"
            )  # fmt: skip
        t.add_row("hard stop", f"{hs['tier']}{halted}, score "
                  f"{hs['score']:.4f} / {hs['red_threshold']:g}, peak {hs['peak']:.2f}"
                  + (f", cooldown left {left:.1f} min" if left is not None else ""))  # fmt: skip
    a = st.get("alerts") or {}
    if a.get("enabled"):
        t.add_row("alerts", f"{a['format']}: {a['sent']} sent, {a['failed']} failed, "
                  f"{a['dropped']} dropped")  # fmt: skip
    console.print(t)

    c = Table(title="coins")
    for col in ("symbol", "price", "long", "WE/limit", "short", "WE/limit", "bankr. dist",
                "liq. dist", "orders", "fills"):  # fmt: skip
        c.add_column(col, justify="left" if col == "symbol" else "right")
    for x in st["coins"]:
        row = [x["symbol"], _f(x["price"])]
        for side in ("long", "short"):
            s = x[side]
            row.append(f"{_f(s['size'])} @ {_f(s['price'])}" if s["size"] else "-")
            row.append(f"{_f(s['wallet_exposure'], 3)}/{_f(s['wallet_exposure_limit'], 3)}")
        row += [
            _pct(x["bankruptcy_distance_pct"]),
            _pct(x["liquidation_distance_pct"]),
            str(len(x["open_orders"])),
            str(len(x["recent_fills"])),
        ]
        c.add_row(*row)
    console.print(c)
    events = (st.get("events") or [])[:10]
    if events:
        e = Table(title="recent events")
        for col in ("time", "kind", "what"):
            e.add_column(col)
        for ev in events:
            e.add_row(time.strftime("%m-%d %H:%M:%S", time.gmtime(ev["time"])), ev["kind"],
                      ev["text"])  # fmt: skip
        console.print(e)


def run(args: argparse.Namespace) -> int:
    url, token_env = _address(args)
    st = fetch_status(url, os.environ.get(token_env) or None, args.timeout)
    if args.json:
        sys.stdout.write(json.dumps(st) + "\n")
        sys.stdout.flush()
    else:
        print_tables(st)
    return 0
