"""Markdown rows for benchmarks/README.md's "Soak" table from `gridbot soak --json` outputs
(or the runs' summary.json files):

    python -m benchmarks.soak_table results/soak_*/summary.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEADER = (
    "| exchange | seed | minutes | start | candles | fills | faults injected | restarts "
    "| entries past limit | max WE/WEL | phantom orders | duplicates | final book = exchange "
    "| reds | entries while red | longest open while red (candles) | halts kept on restart "
    "| hard stop orders (not closing) | failed checks |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def hard_stop_cells(h: dict | None) -> str:
    """The hard stop's columns (``-`` for a soak without it)."""
    if h is None:
        return "| - | - | - | - | - "
    starts = h["starts_while_halted"] + h["halts_lost_on_restart"]
    return (
        f"| {h['reds']} | {h['entries_while_red']} | {h['longest_open_while_red_candles']:g} "
        f"| {h['starts_while_halted']} of {starts} | {h['hard_stop_orders']} "
        f"({h['hard_stop_orders_not_closing']}) "
    )


def row(s: dict) -> str:
    return (
        f"| {s['exchange']} | {s['seed']} | {s['minutes']:g} | {s['start']} | {s['candles']} "
        f"| {s['fills']} | {s['faults_total']} | {s['restarts']} | {s['entries_past_limit']} "
        f"| {s['max_wallet_exposure_ratio']:.4f} | {s['orders_on_phantom_positions']} "
        f"| {s['duplicate_orders']} | {'yes' if s['final_book_matches_exchange'] else 'no'} "
        + hard_stop_cells(s.get("hard_stop"))
        + f"| {', '.join(s['failed_checks']) or 'none'} |"
    )


def main(paths: list[str]) -> None:
    print(HEADER)
    for p in paths:
        text = Path(p).read_text().strip()
        if text:
            print(row(json.loads(text)))


if __name__ == "__main__":
    main(sys.argv[1:])
