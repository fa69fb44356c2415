"""Vault stress test: mass withdrawals (and deposits) against a backtest, `gridbot stress`.

The vault trades one account; depositors hold shares in a ledger (:mod:`bot.vault.ledger`).
A withdrawal of FRACTION at TIME: every depositor asks for FRACTION of their shares (a mass exit
of that share of the vault). At the request (the top of the first trading candle opening at or
after TIME, marked at the previous closes):

- the shares burn at the NAV per share of the request; the leavers' claim is worth
  ``marked_value = FRACTION x equity`` at mark and the NAV per share of those who stay does not
  move;
- the mode is chosen: ``buffer`` (FRACTION below ``vault.controlled_unwind_threshold_pct``, the
  claim within the cash buffer ``vault.cash_buffer_pct x equity`` and the margin still within
  ``vault.leverage_cap`` and ``vault.margin_buffer_pct`` after paying it: paid from cash, no
  position is touched), ``pro_rata`` (below the threshold otherwise: the leavers' slice of every
  position is unwound in the request's candle) or ``controlled_unwind`` (at or above the
  threshold: tranches over the following candles, each advancing every position by the same
  fraction and capped by ``vault.max_participation_pct`` of each coin's candle volume);
- the leavers' slice of every position (:func:`bot.core.vault.pro_rata_slice`, the same
  fraction of each, to qty steps) is moved out of the strategy's book through the event seam
  (``reduce`` events at the mark, then a ``withdraw`` of the marked claim; booked by
  ``bot.core.book.apply_event``), so the strategy goes on with what belongs to the stayers;
- the slice is unwound by :func:`bot.core.vault.unwind` (reduce-only taker executions at each
  candle's typical price moved by the square-root impact model, taker fees, funding while held).
  The leavers' ``realized_value`` is their cash slice plus what the unwind realized; it is paid
  at ``max(request + vault.payout_delay_hours, end of the unwind)``.

The stayers' book and the leavers' slice share one margin account until the unwind ends: the
report's ``liquidation_risk`` checks the two together at every unwind candle's adverse extremes
(see :func:`bot.core.vault.combined_margin`).

The strategy itself runs with the vault's risk-aware sizing: the core sizes from the balance less
the cash buffer, and new entries are blocked (counted, never resized) above the leverage cap or
under the margin buffer (``backtest.engine.EngineInputs``). Each withdrawal is one more engine run
with the events known so far (a request sees the state its candle opens with; later events cannot
change it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from backtest.data import Candles, format_ms, parse_date_ms
from backtest.engine import FUNDING_INTERVAL_MS, EngineOutput, run_engine
from backtest.events import OutsideEvent, events_array
from backtest.impact import impact_inputs
from backtest.runner import build_inputs, vault_sizing
from bot.config import Config, config_to_dict
from bot.core.book import N_R, apply_event
from bot.core.params import M_QTY_STEP
from bot.core.vault import (
    MODE_NAMES,
    N_U,
    U_CUM,
    U_FEE,
    U_K,
    U_PNL,
    U_PRICE,
    U_QTY,
    U_REF,
    U_SIDE,
    U_SYMBOL,
    combined_margin,
    exit_mode,
    pro_rata_slice,
    unwind,
)
from bot.errors import ConfigError
from bot.vault.ledger import Ledger

__all__ = [
    "StressRequest",
    "StressResult",
    "impact_inputs",
    "parse_request",
    "run_stress",
    "write_stress_report",
]

_DAY_MS = 86_400_000


@dataclass(frozen=True)
class StressRequest:
    """A withdrawal (``value``: fraction of every depositor's shares) or a deposit (USDT)."""

    kind: str  # "withdraw" / "deposit"
    time_ms: int
    value: float


def parse_request(spec: str, kind: str) -> StressRequest:
    """``FRACTION@TIME`` (``0.9`` or ``90%``) for --withdraw, ``AMOUNT@TIME`` for --deposit."""
    flag = f"--{kind}"
    body, at, when = spec.partition("@")
    if not at or not when.strip() or not body.strip():
        example = "0.9@2021-05-19T12:00" if kind == "withdraw" else "1000@2021-05-15"
        raise ConfigError(f"{flag} {spec!r}: expected VALUE@TIME, e.g. {example}")
    text = body.strip()
    pct = kind == "withdraw" and text.endswith("%")
    try:
        x = float(text[:-1] if pct else text)
    except ValueError:
        raise ConfigError(f"{flag} {spec!r}: {text!r} is not a number") from None
    if pct:
        x /= 100.0
    if not (math.isfinite(x) and x > 0.0):
        raise ConfigError(f"{flag} {spec!r}: the value must be positive")
    if kind == "withdraw" and x > 1.0:
        raise ConfigError(f"{flag} {spec!r}: a withdrawal is a fraction of the shares, at most 1")
    try:
        t = parse_date_ms(when.strip())
    except ConfigError as exc:
        raise ConfigError(f"{flag} {spec!r}: {exc}") from None
    return StressRequest(kind, t, x)


@dataclass
class StressResult:
    config: Config
    candles: Candles
    output: EngineOutput  # the last engine run (every event)
    report: dict  # the JSON object `gridbot stress --json` prints (without report_dir)
    nav_per_share: np.ndarray  # (n,) at each candle's close
    unwind_rows: np.ndarray  # (rows, N_U + 1): bot.core.vault U_* columns + exit index
    held: list[tuple[int, np.ndarray]]  # per exit: (first candle, slice held (m, 2, n_coins))
    ledger_path: str
    # the outside events the last engine run booked (deposits, the exits' reduce and withdraw
    # events): `gridbot replay` / backtest.replay.replay(events=...) take them as they are
    events: list[OutsideEvent] = dataclasses.field(default_factory=list)


def _state(out: EngineOutput, k: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(balance, equity, size (2, n), price (2, n)) at the close of candle k."""
    pos = out.positions[k]  # (n_coins, 4)
    size = np.ascontiguousarray(np.stack([pos[:, 0], pos[:, 2]]))
    price = np.ascontiguousarray(np.stack([pos[:, 1], pos[:, 3]]))
    return float(out.balance[k]), float(out.equity[k]), size, price


def run_stress(  # noqa: C901 -- the vault stress timeline in one pass (debt)
    config: Config,
    candles: Candles,
    requests: Sequence[StressRequest],
    ledger_path: str | Path = ":memory:",
) -> StressResult:
    """Run the vault through ``requests`` over ``candles`` (see the module docstring)."""
    vc = config.vault
    base = build_inputs(config, candles)
    base = dataclasses.replace(base, **vault_sizing(vc))  # type: ignore[arg-type]
    ts = np.asarray(candles.timestamps, dtype=np.int64)
    n = len(ts)
    n_sym = len(candles.symbols)
    steps = np.ascontiguousarray(base.markets[:, M_QTY_STEP])
    tiers = base.tiers
    ohlcv = np.ascontiguousarray(candles.ohlcv)
    funding_due = (ts % FUNDING_INTERVAL_MS) == 0
    vol, vday = impact_inputs(candles, vc.volatility_window_minutes)
    start = int(base.trade_start)

    reqs = sorted(requests, key=lambda r: r.time_ms)
    ks = []
    for r in reqs:
        k = max(int(np.searchsorted(ts, r.time_ms, side="left")), start, 1)
        if k >= n:
            raise ConfigError(
                f"--{r.kind} at {format_ms(r.time_ms)}: after the last candle "
                f"({format_ms(int(ts[-1]))})"
            )
        if k in ks:
            raise ConfigError(
                f"--{r.kind} at {format_ms(r.time_ms)}: another request falls in the same candle "
                f"({format_ms(int(ts[k]))}); give each request its own minute"
            )
        ks.append(k)

    ledger = Ledger(ledger_path)
    ledger.deposit("vault", config.backtest.starting_balance, 0.0, int(ts[start]))
    events: list[OutsideEvent] = []
    shares = np.full(n, ledger.total_shares())
    exits: list[dict] = []
    deposits: list[dict] = []
    all_rows: list[np.ndarray] = []
    held_all: list[tuple[int, np.ndarray]] = []
    slice_info: list[tuple[np.ndarray, float, np.ndarray]] = []
    delay_ms = int(round(vc.payout_delay_hours * 3_600_000))
    rows_buf = np.zeros((2 * n_sym, N_R))

    def engine(evs: list[OutsideEvent]) -> EngineOutput:
        inp = dataclasses.replace(base, events=events_array(evs, candles.symbols))
        return run_engine(inp)

    out = engine(events)
    for r, k in zip(reqs, ks, strict=True):
        if out.liquidated_k >= 0 and out.liquidated_k < k:
            raise ConfigError(
                f"--{r.kind} at {format_ms(r.time_ms)}: the vault was liquidated before "
                f"({format_ms(int(ts[out.liquidated_k]))})"
            )
        bal, equity, size, pprice = _state(out, k - 1)
        marks = np.ascontiguousarray(ohlcv[:, k - 1, 3])
        nav_before = ledger.nav_per_share(equity)
        t = int(ts[k])
        if r.kind == "deposit":
            for_shares = ledger.deposit(f"depositor_{len(events)}", r.value, equity, t)
            events.append(OutsideEvent(r.time_ms, "deposit", amount=r.value))
            shares[k:] += for_shares
            out = engine(events)
            deposits.append(
                {
                    "requested_at": format_ms(r.time_ms),
                    "applied_at": format_ms(t),
                    "amount": r.value,
                    "shares_minted": for_shares,
                    "nav_per_share": nav_before,
                    "nav_per_share_after": (equity + r.value) / ledger.total_shares(),
                }
            )
            continue
        f = r.value
        marked = f * equity
        mode = MODE_NAMES[
            exit_mode(
                f,
                marked,
                equity,
                bal,
                size,
                marks,
                tiers,
                vc.controlled_unwind_threshold_pct,
                vc.cash_buffer_pct,
                vc.leverage_cap,
                vc.margin_buffer_pct,
            )  # fmt: skip
        ]
        slice_qty = pro_rata_slice(size, f, steps) if mode != "buffer" else np.zeros_like(size)
        sides = np.array([[1.0], [-1.0]])
        slice_upnl = float((slice_qty * (marks[None, :] - pprice) * sides).sum())
        new_events = []
        for j in range(2):
            for s in range(n_sym):
                if slice_qty[j, s] > 0.0:
                    new_events.append(
                        OutsideEvent(
                            r.time_ms,
                            "reduce",
                            amount=float(slice_qty[j, s]),
                            symbol=candles.symbols[s],
                            side=1 if j == 0 else -1,
                            price=float(marks[s]),
                        )  # fmt: skip
                    )
        # The claim leaves as cash first when the balance covers it, then the slice; else the
        # slice's pnl is realized first. (Both book the same; the live bot mishandles a
        # withdrawal reported right after position adjustments in one step, see the README.)
        withdraw = OutsideEvent(r.time_ms, "withdraw", amount=marked)
        new_events = [withdraw, *new_events] if marked <= bal else [*new_events, withdraw]
        # the stayers' state right after the request, booked by the one booking path
        b2, sz2, pp2 = bal, size.copy(), pprice.copy()
        peak = max(bal, 1.0)
        for ev in events_array(new_events, candles.symbols):
            b2, peak, _ = apply_event(ev, b2, peak, sz2, pp2, marks, steps, rows_buf)
        stay_equity = b2 + float(((sz2 * (marks[None, :] - pp2)) * sides).sum())
        # the ledger: every depositor asks for f of their shares
        burned = 0.0
        exit_ids = []
        for name, held_shares in ledger.depositors().items():
            if held_shares <= 0.0:
                continue
            ex = ledger.request_withdrawal(name, held_shares * f, equity, t, mode, delay_ms)
            burned += ex.shares
            exit_ids.append(ex.id)
        shares[k:] -= burned
        nav_after = stay_equity / ledger.total_shares() if ledger.total_shares() > 0 else None

        # the leavers' slice: unwound from candle k
        held = np.zeros((n - k, 2, n_sym))
        urows = np.zeros(
            (4 * n_sym * max(1, n - k) if mode == "controlled_unwind" else 2 * n_sym, N_U)
        )
        if mode == "buffer":
            nr, k_end, n_tr, pnl, fees, funding, slip, notional = 0, k, 0, 0.0, 0.0, 0.0, 0.0, 0.0
        else:
            nr, k_end, n_tr, pnl, fees, funding, slip, notional = unwind(
                slice_qty, np.ascontiguousarray(pprice), k, ohlcv, funding_due, vol, vday, steps,
                mode == "controlled_unwind", vc.max_participation_pct, vc.impact_coef,
                config.backtest.taker_fee, config.backtest.funding_rate_8h, urows, held,
            )  # fmt: skip
        urows = urows[:nr]
        cash_slice = marked - slice_upnl
        realized = cash_slice + pnl - fees - funding
        finished = k_end >= 0
        m_held = (k_end - k + 1) if finished else (n - k)
        held = held[:m_held]
        # progress persisted tranche by tranche (the cumulative fraction and value so far)
        share_w = {eid: ledger.exit(eid).shares / burned if burned > 0 else 0.0 for eid in exit_ids}
        if mode == "buffer":
            for eid in exit_ids:
                ledger.record_progress(eid, 1.0, marked * share_w[eid])
        else:
            acc = cash_slice
            cum_prev = -1.0
            for i in range(nr):
                acc += urows[i, U_PNL] - urows[i, U_FEE]
                last_of_tranche = i == nr - 1 or urows[i + 1, U_K] != urows[i, U_K]
                if last_of_tranche and urows[i, U_CUM] != cum_prev:
                    cum_prev = urows[i, U_CUM]
                    for eid in exit_ids:
                        ledger.record_progress(eid, float(urows[i, U_CUM]), acc * share_w[eid])
            for eid in exit_ids:  # funding is known at the end of the unwind
                ex = ledger.exit(eid)
                ledger.record_progress(eid, ex.progress, realized * share_w[eid])
        paid_at = None
        if finished:
            end_ms = int(ts[k_end]) + candles.timeframe_ms
            due = max(t + delay_ms, end_ms)
            if due <= int(ts[-1]) + candles.timeframe_ms:
                paid_at = due
                for eid in exit_ids:
                    ledger.pay(eid, realized * share_w[eid], due)
        positions = []
        for s in range(n_sym):
            for j in range(2):
                if size[j, s] > 0.0:
                    after = size[j, s] - slice_qty[j, s]
                    positions.append(
                        {
                            "symbol": candles.symbols[s],
                            "side": "long" if j == 0 else "short",
                            "size_before": float(size[j, s]),
                            "size_after": float(after),
                            "reduced_fraction": float(slice_qty[j, s] / size[j, s]),
                            "mark_price": float(marks[s]),
                            "entry_price": float(pprice[j, s]),
                            "unrealized_pnl": float(
                                size[j, s] * (marks[s] - pprice[j, s]) * (1 if j == 0 else -1)
                            ),
                        }
                    )
        # market move: what the prices did to the slice between the request and each tranche
        move = 0.0
        for i in range(nr):
            s_i = int(urows[i, U_SYMBOL])
            move += abs(urows[i, U_QTY]) * (urows[i, U_REF] - marks[s_i]) * urows[i, U_SIDE]
        exits.append(
            {
                "requested_at": format_ms(r.time_ms),
                "applied_at": format_ms(t),
                "fraction": f,
                "mode": mode,
                "equity_before": equity,
                "marked_value": marked,
                "realized_value": realized,
                "realized_minus_marked": realized - marked,
                "paid_at": format_ms(paid_at) if paid_at is not None else None,
                "unwind_finished_at": format_ms(int(ts[k_end]) + candles.timeframe_ms)
                if finished
                else None,
                "unwind_minutes": (k_end - k + 1) * candles.timeframe_ms / 60_000
                if finished
                else None,
                "slippage": slip,
                "fees": fees,
                "funding": funding,
                "market_move": move,
                "notional_unwound": notional,
                "tranches": n_tr,
                "shares_burned": burned,
                "nav_per_share_before": nav_before,
                "nav_per_share_after_request": nav_after,
                "stayers_equity_after_request": stay_equity,
                "positions": positions,
                "ledger_exit_ids": exit_ids,
            }
        )
        if nr:
            all_rows.append(np.column_stack([urows, np.full(nr, len(exits) - 1)]))
        held_all.append((k, held))
        slice_info.append((np.ascontiguousarray(pprice), cash_slice, slice_qty))
        events.extend(new_events)
        out = engine(events)

    # the whole account (stayers + slices in flight) during each unwind
    for i, (exit_row, (k0, held), (sp, cs, sq)) in enumerate(
        zip(exits, held_all, slice_info, strict=True)
    ):
        rows_i = np.vstack(all_rows)[:, :N_U] if all_rows else np.zeros((0, N_U))
        if all_rows:
            rows_i = rows_i[np.vstack(all_rows)[:, N_U] == i]
        exit_row["liquidation_risk"] = _unwind_risk(
            out, k0, held, sq, sp, cs, rows_i, ohlcv, tiers, ts
        )

    # NAV per share of those who stay (nan once nobody holds a share)
    live_shares = shares > 1e-9
    nav = np.full(n, np.nan)
    nav[live_shares] = out.equity[live_shares] / shares[live_shares]
    nav_t = nav[start:]
    nav_t = nav_t[np.isfinite(nav_t)]
    dd = 0.0
    if len(nav_t):
        nav_peak = np.maximum.accumulate(nav_t)
        dd = float(np.max(1.0 - nav_t / np.where(nav_peak > 0, nav_peak, np.nan), initial=0.0))
    liq = out.liquidated_k >= 0
    first = exits[0] if exits else {}
    report = {
        "symbols": list(candles.symbols),
        "start": format_ms(int(ts[start])),
        "end": format_ms(int(ts[-1]) + candles.timeframe_ms),
        "starting_balance": config.backtest.starting_balance,
        "vault": config_to_dict(config)["vault"],
        "exits": exits,
        "deposits": deposits,
        "nav_per_share_before": first.get("nav_per_share_before"),
        "nav_per_share_after_request": first.get("nav_per_share_after_request"),
        "remaining": {
            "final_equity": float(out.equity[-1]),
            "final_nav_per_share": float(nav[-1]) if np.isfinite(nav[-1]) else None,
            "shares": float(shares[-1]),
            "drawdown_worst": dd,
            "liquidated": bool(liq),
            "liquidation_time": format_ms(int(ts[out.liquidated_k])) if liq else None,
            "liquidated_during_unwind": any(
                e["liquidation_risk"]["liquidated_during_unwind"] for e in exits
            ),
            "entries_blocked_candles": int(out.entries_blocked.sum()),
            "fees_paid": float(out.fees_paid),
            "funding_paid": float(out.funding_paid),
        },
        "ledger": {
            "total_shares": ledger.total_shares(),
            "depositors": ledger.depositors(),
        },
    }
    ledger.close()
    rows = np.vstack(all_rows) if all_rows else np.zeros((0, N_U + 1))
    return StressResult(
        config, candles, out, report, nav, rows, held_all, str(ledger_path), list(events)
    )


def _unwind_risk(  # noqa: PLR0913
    out: EngineOutput,
    k0: int,
    held: np.ndarray,
    slice_qty: np.ndarray,
    slice_price: np.ndarray,
    cash_slice: float,
    urows: np.ndarray,
    ohlcv: np.ndarray,
    tiers: np.ndarray,
    ts: np.ndarray,
) -> dict:
    """Margin of the whole account, the stayers' book plus the leavers' slice still held and its
    cash (realized so far, fees paid), at each unwind candle's adverse extremes with the
    positions it comes in with (as the engine checks liquidation); and of the stayers' book alone (the leavers' cash does not
    stand as their collateral: the engine liquidates the stayers' book on its own)."""
    worst_ratio = math.inf
    worst_stay = math.inf
    max_lev = 0.0
    first_liq = None
    zero = np.zeros_like(slice_price)
    r = 0
    slice_cash = cash_slice
    for m in range(held.shape[0]):
        k = k0 + m
        # what comes into candle k: the tranches before it, the books at the previous close
        # (the stayers' right after the request in the request's candle)
        while r < urows.shape[0] and int(urows[r, U_K]) < k:
            slice_cash += urows[r, U_PNL] - urows[r, U_FEE]
            r += 1
        if m == 0:
            bal, _, size, pprice = _state(out, k)
            slice_held = slice_qty
        else:
            bal, _, size, pprice = _state(out, k - 1)
            slice_held = np.ascontiguousarray(held[m - 1])
        lows = np.ascontiguousarray(ohlcv[:, k, 2])
        highs = np.ascontiguousarray(ohlcv[:, k, 1])
        eq, mm, notional = combined_margin(
            bal + slice_cash, size, pprice, slice_held, slice_price, lows,
            highs, tiers,
        )  # fmt: skip
        ratio = (eq - mm) / eq if eq > 0 else -1.0
        worst_ratio = min(worst_ratio, ratio)
        if size.any():
            eq_s, mm_s, _ = combined_margin(bal, size, pprice, zero, zero, lows, highs, tiers)
            worst_stay = min(worst_stay, (eq_s - mm_s) / eq_s if eq_s > 0 else -1.0)
        if eq > 0:
            max_lev = max(max_lev, notional / eq)
        if eq <= mm and first_liq is None:
            first_liq = int(ts[k])
        if out.liquidated_k == k and first_liq is None:
            first_liq = int(ts[k])  # the stayers' book was liquidated in the unwind
    return {
        "min_margin_ratio": None if worst_ratio == math.inf else worst_ratio,
        "stayers_min_margin_ratio": None if worst_stay == math.inf else worst_stay,
        "max_leverage": max_lev,
        "liquidated_during_unwind": first_liq is not None,
        "first_at_risk": format_ms(first_liq) if first_liq is not None else None,
    }


def new_stress_dir(out_dir: Path, config: Config, candles: Candles) -> tuple[Path, str]:
    """(a hidden work folder, the final name ``stress_<UTC time>_<hash of config and data
    range>``): written there, then :func:`backtest.report.publish` renames it whole."""
    from backtest.report import partial_dir

    blob = orjson.dumps(config_to_dict(config), option=orjson.OPT_SORT_KEYS)
    blob += f"|{','.join(candles.symbols)}|{int(candles.timestamps[0])}".encode()
    name = f"stress_{datetime.now(UTC):%Y-%m-%dT%H-%M-%SZ}_{hashlib.sha256(blob).hexdigest()[:6]}"
    return partial_dir(Path(out_dir), name), name


def write_stress_report(
    result: StressResult, folder: Path, plots: bool = True, report_dir: Path | None = None
) -> list[Path]:
    """``stress.json`` (the report), ``unwind.csv`` (every tranche execution),
    ``nav_per_share.csv`` and, with ``plots``, ``nav_per_share.png`` and ``unwind.png``."""
    folder = Path(folder)
    written = []
    p = folder / "stress.json"
    p.write_bytes(
        orjson.dumps(
            {**result.report, "report_dir": str(report_dir or folder)},
            option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY,
        )
    )
    written.append(p)
    syms = result.candles.symbols
    ts = np.asarray(result.candles.timestamps, dtype=np.int64)
    p = folder / "unwind.csv"
    with p.open("w") as fh:
        fh.write("exit,time,symbol,side,qty,reference_price,price,fee,pnl,cumulative_fraction\n")
        for row in result.unwind_rows:
            fh.write(
                f"{int(row[N_U])},{format_ms(int(ts[int(row[U_K])]))},{syms[int(row[U_SYMBOL])]},"
                f"{'long' if row[U_SIDE] > 0 else 'short'},{row[U_QTY]:.10g},{row[U_REF]:.10g},"
                f"{row[U_PRICE]:.10g},{row[U_FEE]:.10g},{row[U_PNL]:.10g},{row[U_CUM]:.10g}\n"
            )
    written.append(p)
    p = folder / "nav_per_share.csv"
    out = result.output
    with p.open("w") as fh:
        fh.write("time,equity,nav_per_share,entries_blocked\n")
        step = max(1, len(ts) // 20_000)
        for k in range(0, len(ts), step):
            fh.write(
                f"{format_ms(int(ts[k]))},{out.equity[k]:.10g},{result.nav_per_share[k]:.10g},"
                f"{int(out.entries_blocked[k])}\n"
            )
    written.append(p)
    if plots:
        written += _plots(result, folder)
    return written


def _plots(result: StressResult, folder: Path) -> list[Path]:
    from backtest.report import _dates, _figure, _save, _time_axis

    ts = np.asarray(result.candles.timestamps, dtype=np.int64)
    start = int(np.searchsorted(ts, parse_date_ms(result.report["start"].rstrip("Z"))))
    x = _dates(ts[start:])
    fig, (ax,) = _figure((14, 5), 1)
    ax.plot(x, result.nav_per_share[start:], lw=0.8, color="tab:blue", label="NAV per share")
    for ex in result.report["exits"]:
        t = parse_date_ms(ex["applied_at"].rstrip("Z"))
        ax.axvline(_dates(np.array([t]))[0], color="tab:red", lw=0.8, ls="--")
        ax.annotate(
            f"{ex['fraction'] * 100:.0f}% out ({ex['mode']})",
            (_dates(np.array([t]))[0], ax.get_ylim()[1]),
            fontsize=8,
            va="top",
        )
    ax.set_ylabel("NAV per share (USDT)")
    ax.set_title("NAV per share of the depositors who stay")
    ax.legend(loc="lower left")
    _time_axis(ax)
    p1 = folder / "nav_per_share.png"
    _save(fig, p1)
    written = [p1]
    if not result.held:
        return written
    syms = result.candles.symbols
    fig, axes = _figure((14, 4 + 2.2 * len(result.held)), len(result.held) + 1, sharex=False)
    for i, (k0, held) in enumerate(result.held):
        ax = axes[i]
        m = held.shape[0]
        xs = _dates(ts[k0 : k0 + m])
        pos = result.output.positions[k0 : k0 + m]
        for s, sym in enumerate(syms):
            for j, name in ((0, "long"), (1, "short")):
                if held[:, j, s].max(initial=0.0) <= 0.0 and pos[:, s, 2 * j].max(initial=0) <= 0:
                    continue
                first = held[0, j, s] if m else 0.0
                total0 = first + pos[0, s, 2 * j] if m else 1.0
                scale = total0 if total0 > 0 else 1.0
                ax.plot(xs, held[:, j, s] / scale, lw=1.0, label=f"{sym} {name}: slice held")
                ax.plot(
                    xs, pos[:, s, 2 * j] / scale, lw=0.8, ls=":", label=f"{sym} {name}: stayers"
                )
        rows = result.unwind_rows[result.unwind_rows[:, N_U] == i]
        for kk in np.unique(rows[:, U_K]).astype(np.int64) if len(rows) else []:
            ax.axvline(_dates(np.array([ts[kk]]))[0], color="grey", lw=0.3, alpha=0.5)
        ax.set_ylabel("size / size at request")
        ax.set_title(f"exit {i}: positions during the unwind (grey lines: tranches)")
        ax.legend(fontsize=7, loc="upper right", ncol=2)
        _time_axis(ax, label=False)
    ax = axes[-1]
    if len(result.unwind_rows):
        r = result.unwind_rows
        ax.bar(
            _dates(ts[r[:, U_K].astype(np.int64)]),
            np.abs(r[:, U_QTY]) * r[:, U_PRICE],
            width=1 / 1440,
            color="tab:orange",
        )
    ax.set_ylabel("tranche notional (USDT)")
    ax.set_title("each tranche's executions")
    _time_axis(ax)
    p2 = folder / "unwind.png"
    _save(fig, p2)
    written.append(p2)
    return written
