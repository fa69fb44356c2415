"""The engine's shortcuts never change a fill.

The engine asks the core for orders only when a candle can reach the nearest cached order. The
reference here asks the core for every order of every position on every candle, rests them all
on the simulated venue's matching engine (independent bookkeeping, no network) and steps it
candle by candle. Both must produce exactly the same fills, on real candles through the crash.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from backtest.data import Candles, load_candles, parse_date_ms
from backtest.engine import F_K, F_KIND, F_PRICE, F_QTY, F_SIDE, F_SYMBOL
from backtest.replay import round_to_ticks
from backtest.runner import run_backtest
from backtest.venue.matching import MatchingEngine
from bot.config import Config, load_config, parse_config, side_params_array
from bot.core import ema_alphas, ema_update, ideal_orders, opening_slots
from bot.core.params import KIND_NAMES
from tests.test_live_replay import TIGHT_GRID_SIDE

DATA = "data/sample/binance_spot_1m"


def reference_fills(config: Config, candles: Candles, trade_start: int) -> list[tuple]:
    symbols = candles.symbols
    me = MatchingEngine(
        symbols,
        maker_fee=config.backtest.maker_fee,
        funding_rate=config.backtest.funding_rate_8h,
        default_leverage=125,
        candles=candles,
    )
    key = "ref"
    acct = me.add_account(key, "secret", config.backtest.starting_balance, hedge_mode=True)
    me.set_prices({s: candles.ohlcv[i, 0, 3] for i, s in enumerate(symbols)}, 0)
    sides = (config.bot.long, config.bot.short)
    params = [side_params_array(sd) for sd in sides]
    alphas = [ema_alphas(sd.ema_span_0, sd.ema_span_1) for sd in sides]
    emas = [[np.full(3, candles.ohlcv[i, 0, 3]) for i in range(len(symbols))] for _ in sides]
    peak = acct.balance
    out = []
    for k in range(1, candles.ohlcv.shape[1]):
        for j in range(2):
            for i in range(len(symbols)):
                ema_update(emas[j][i], alphas[j], candles.ohlcv[i, k - 1, 3])
        if k < trade_start:
            me.step_candle(k)  # no orders yet: only the price moves
            continue
        for o in list(acct.open_orders.values()):
            me.cancel_order(key, o.symbol, order_id=o.order_id)
        for j, (side, pside) in enumerate(((1, "LONG"), (-1, "SHORT"))):
            sizes = np.array([abs(acct.position(s, pside).amount) for s in symbols])
            slots = opening_slots(sizes, sides[j].n_positions)
            for i, s in enumerate(symbols):
                pos = acct.position(s, pside)
                price = candles.ohlcv[i, k - 1, 3]
                rows = ideal_orders(
                    side, acct.balance, peak, abs(pos.amount), pos.entry_price, price, price,
                    emas[j][i], market_array(me, s), params[j], bool(slots[i]),
                )  # fmt: skip
                for qty, p, _kind in rows:
                    me.place_order(
                        key, s, "BUY" if qty > 0 else "SELL", "LIMIT", abs(qty), p,
                        time_in_force="GTC", position_side=pside,
                    )  # fmt: skip
        fills = me.step_candle(k)
        running = acct.balance - sum(f.realized_pnl - f.commission for f in fills)
        for f in fills:
            running += f.realized_pnl - f.commission
            peak = max(peak, running)
            sign = 1.0 if f.side == "BUY" else -1.0
            out.append((k, f.symbol, 1 if f.position_side == "LONG" else -1, f.price, sign * f.qty))
        if acct.liquidated:
            break
    return out


def market_array(me: MatchingEngine, symbol: str) -> np.ndarray:
    return me.specs[symbol].as_array()


def engine_fills(config: Config, candles: Candles) -> tuple[list[tuple], int, list[str]]:
    run = run_backtest(config, candles)
    kinds = [KIND_NAMES[int(k)] for k in run.output.fills[:, F_KIND]]
    fills = [
        (int(r[F_K]), candles.symbols[int(r[F_SYMBOL])], int(r[F_SIDE]), r[F_PRICE], r[F_QTY])
        for r in run.output.fills
    ]
    return fills, run.inputs.trade_start, kinds


def as_multiset(fills: list[tuple]) -> Counter:
    return Counter((k, s, side, round(p, 10), round(q, 10)) for k, s, side, p, q in fills)


def tight_grid(**overrides: object) -> dict:
    return {**TIGHT_GRID_SIDE, **overrides}


CASES = {
    "tight grid both sides, BTC+DOGE": (
        ["BTCUSDT", "DOGEUSDT"],
        {"bot": {"long": tight_grid(), "short": {**tight_grid(), "enabled": True}}},
    ),
    "unstuck and n_positions 1 of 3": (
        ["BTCUSDT", "ETHUSDT", "DOGEUSDT"],
        {
            "bot": {
                "long": tight_grid(
                    n_positions=1,
                    total_wallet_exposure_limit=0.6,
                    unstuck_threshold=0.6,
                    unstuck_close_pct=0.2,
                    unstuck_ema_dist=-0.002,
                    unstuck_loss_allowance_pct=0.1,
                ),
                "short": {"enabled": False},
            }
        },
    ),
    "default config, 3 coins": (["BTCUSDT", "ETHUSDT", "DOGEUSDT"], "configs/default.hjson"),
    # unstuck losses shrink the balance under full positions: the enforcer brings them back
    "exposure limit enforced": (
        ["BTCUSDT", "ETHUSDT", "DOGEUSDT"],
        {
            "bot": {
                "long": tight_grid(
                    n_positions=3,
                    total_wallet_exposure_limit=1.5,
                    unstuck_threshold=0.5,
                    unstuck_close_pct=0.3,
                    unstuck_ema_dist=-0.002,
                    unstuck_loss_allowance_pct=0.1,
                    enforce_exposure_limit=True,
                ),
                "short": {"enabled": False},
            }
        },
    ),
}


CASES_KINDS = {
    "default config, 3 coins": {"entry_initial", "entry_grid", "close"},
    "tight grid both sides, BTC+DOGE": {"entry_initial", "entry_grid", "close"},
    "unstuck and n_positions 1 of 3": {"entry_initial", "entry_grid", "close", "unstuck"},
    "exposure limit enforced": {"entry_grid", "close", "unstuck", "exposure_limit"},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_engine_fills_equal_a_loop_that_asks_the_core_on_every_candle(case: str):
    symbols, cfg = CASES[case]
    if isinstance(cfg, str):
        config = load_config(cfg)
    else:
        config = parse_config({**cfg, "backtest": {"symbols": symbols, "starting_balance": 1e3}})
    start = parse_date_ms("2021-05-19")
    candles = round_to_ticks(
        load_candles(DATA, symbols, start_ms=start - 3_600_000, end_ms=start + 86_400_000)
    )
    fills, trade_start, kinds = engine_fills(config, candles)
    ref = reference_fills(config, candles, trade_start)
    assert len(fills) > 100, "the case should trade a lot"
    assert set(kinds) >= CASES_KINDS[case]
    # buys and sells on both sides: entries and closes both happened
    assert any(q > 0 for *_, q in fills) and any(q < 0 for *_, q in fills)
    assert as_multiset(fills) == as_multiset(ref)
    # and in the same order: one within-candle fill order (bot.core.book.candle_fill_order)
    assert [(k, s, side, round(p, 10), round(q, 10)) for k, s, side, p, q in fills] == [
        (k, s, side, round(p, 10), round(q, 10)) for k, s, side, p, q in ref
    ]
