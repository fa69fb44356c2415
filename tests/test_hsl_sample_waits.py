"""The live hard stop's minute sample waits for every coin's cycle in flight: an order decided
under the old tier must not go out after the new tier is in force.

Found by the hard stop soak (bybit seed 4): a DOGE cycle computed its orders while green, the
BTC cycle sampled red meanwhile, and the DOGE orders were created 0.4 s after the red. The
bot here is the real LiveHardStop, coins and SQLite state; the exchange side is a stand-in
(the sample reads no exchange), its equity drops 1% so the sample goes red."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from bot.config import parse_config
from bot.core import hard_stop as H
from bot.live.coin import Coin
from bot.live.hard_stop import LiveHardStop
from bot.live.state import StateStore
from bot.markets import market_spec

TS = 1_621_000_000_000


class _Bot:
    def __init__(self, state_dir: str) -> None:
        self.config = parse_config({"bot": {"common": {"equity_hard_stop_loss": {
            "enabled": True, "red_threshold": 0.005, "ema_span_minutes": 1}}}})  # fmt: skip
        self.coins = {}
        for s in ("BTCUSDT", "DOGEUSDT"):
            spec = market_spec(s)
            self.coins[s] = Coin(s, spec, spec.as_array(), last_kline_ts=TS - 60_000)
        self.state = StateStore(state_dir, fsync=False)
        self.balance = 1000.0
        self.cycle = self
        self.book = SimpleNamespace(unexplained=False)  # no balance change awaiting the log
        self.notes: list[str] = []

    async def klines_aligned(self, ts: int) -> None:
        return None

    def strategy_balance(self) -> float:
        return self.balance

    def strategy_position(self, symbol: str, j: int) -> tuple[float, float]:
        return 0.0, 0.0

    def notify(self, kind: str, **f: object) -> None:
        self.notes.append(str(f.get("what")))


def test_the_sample_waits_for_a_cycle_in_flight_on_another_coin(tmp_path):
    async def scene() -> list[str]:
        bot = _Bot(str(tmp_path))
        hs = LiveHardStop(bot)  # type: ignore[arg-type]
        hs.load()  # fresh: peak 1000, the first sample is the next minute's
        hs.panic_due = False
        order: list[str] = []
        doge = bot.coins["DOGEUSDT"]

        async def doge_cycle() -> None:  # the cycle's shape: orders decided, then created
            async with doge.lock:
                ok_new = hs.permissions()[0]
                order.append(f"doge decided (may open: {ok_new})")
                await asyncio.sleep(0.2)  # the create's REST round trip
                order.append("doge created")

        async def btc_sample() -> None:
            await asyncio.sleep(0.05)  # the next minute closes while DOGE's create is out
            bot.balance = 990.0
            for c in bot.coins.values():
                c.last_kline_ts = TS
            hs.panic_due = False
            orig = hs._panic

            async def no_panic() -> None:  # the closes are not what this test is about
                order.append(f"red in force: {hs.tier == H.TIER_RED}")

            hs._panic = no_panic  # type: ignore[method-assign]
            await hs.before_cycle(TS)
            hs._panic = orig  # type: ignore[method-assign]

        await asyncio.gather(doge_cycle(), btc_sample())
        return order

    order = asyncio.run(scene())
    # the DOGE order decided while green went out before red was in force, never after
    assert order == ["doge decided (may open: True)", "doge created", "red in force: True"]
