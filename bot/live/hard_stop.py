"""The equity hard stop loss in the live bot (``bot.common.equity_hard_stop_loss``; the
arithmetic is :mod:`bot.core.hard_stop`'s, shared with the backtester).

- One sample per closed 1m kline, account-wide: the first coin cycle of a minute takes the
  lock, waits (bounded) until every coin's kline of that minute is in, and samples the
  strategy's equity (balance + unrealized pnl of its positions at each coin's kline close);
  the other coins' cycles read the tier it left. A missed minute is not back-filled. A minute
  whose balance holds a change the exchange's account log has not explained yet (Bybit: a
  withdrawal until the log says so, :mod:`bot.live.transfers`) is skipped, not sampled.
- The tier governs the orders until the next sample (:meth:`LiveHardStop.permissions`, applied
  by :meth:`bot.live.cycle.OrderCycle.ideal`). Red: every order of ours is cancelled and every
  position the exchange reports (both sides, every coin) is closed by reduce-only market
  orders right after the sample, and again after every sample while positions remain.
- The closes are kill-safe (:mod:`bot.live.market_close`): each one is recorded in the state
  before it is sent; one still recorded after a kill is asked for by its client id before the
  exchange's positions are read again, so nothing is closed twice.
- The state (the whole ``h`` array and the params it was made with) is saved after every
  sample, transfer and reset; a restart resumes it (a halt survives restarts). Changed params
  keep the state and apply from the next sample. ``--reset-hard-stop`` (``reset=True``) starts
  again: peak = equity now, green.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.config import hard_stop_params_array
from bot.core import hard_stop as H
from bot.core.account import unrealized_pnl
from bot.errors import ExchangeError
from bot.live.market_close import ask_close, send_close

if TYPE_CHECKING:
    from bot.live.bot import LiveBot

__all__ = ["CLOSE_PREFIX", "STATE_CLOSES", "STATE_KEY", "LiveHardStop"]

log = logging.getLogger("gridbot.live.hard_stop")

STATE_KEY = "hard_stop"  # {"h": [...N_H], "hp": [...N_HP]}
STATE_CLOSES = "hard_stop_closes"  # {client id: [symbol, pside, qty]}: sent, not yet booked
CLOSE_PREFIX = "gbh"  # the hard stop's market closes (ours: "gb...")
_MINUTE_MS = 60_000
_SIDES = (1, -1)


class LiveHardStop:
    def __init__(self, bot: LiveBot, *, reset: bool = False) -> None:
        self.bot = bot
        self.hp = hard_stop_params_array(bot.config)
        self.enabled = bool(self.hp[H.HP_ENABLED])
        self.h = np.zeros(H.N_H)
        H.hsl_init(self.h, 0.0)
        self.reset = reset
        self.lock = asyncio.Lock()
        self.panic_due = False
        self._red_new = False  # a red trigger not yet reported (with what it closed)
        self.tiers: list[tuple[int, int]] = []  # (kline open ms, tier) per sample, this session
        self.closes: list[dict[str, Any]] = []  # the closes sent this session (for tests)
        self.skipped: list[int] = []  # minutes not sampled: a balance change unexplained
        # started afresh (no saved state, or --reset-hard-stop): its peak is the equity now,
        # so a transfer from before the start (read from Bybit's log at start-up) moves nothing
        self.fresh = False

    # ------------------------------------------------------------------ views

    @property
    def tier(self) -> int:
        return int(self.h[H.H_TIER]) if self.enabled else H.TIER_GREEN

    def permissions(self) -> tuple[bool, bool, bool]:
        """(may open a new position, may add to one, red: nothing but closes)."""
        if not self.enabled:
            return True, True, False
        ok_new, ok_add, panic = H.hsl_permissions(self.tier, self.hp)
        return bool(ok_new), bool(ok_add), bool(panic)

    def equity(self) -> float:
        """The strategy's balance + the unrealized pnl of its positions at each coin's last
        kline close."""
        bot = self.bot
        eq = bot.strategy_balance()
        for s, c in bot.coins.items():
            price = c.kline_close if not math.isnan(c.kline_close) else c.last_price
            for j, side in enumerate(_SIDES):
                size, pprice = bot.strategy_position(s, j)
                if size > 0.0 and not math.isnan(price):
                    eq += unrealized_pnl(side, size, pprice, price)
        return float(eq)

    def flat(self) -> bool:
        return all(
            self.bot.strategy_position(s, j)[0] <= 0.0 for s in self.bot.coins for j in (0, 1)
        )

    def cooldown_left_minutes(self) -> float | None:
        """Minutes until a halted, flat account restarts; None: not counting down (not
        halted, not flat yet, or a halt that never ends by itself)."""
        h = self.h
        cd = self.hp[H.HP_COOLDOWN_MINUTES]
        if not h[H.H_HALTED] or h[H.H_TERMINAL] or cd <= 0.0 or h[H.H_FLAT_SINCE_MS] < 0.0:
            return None
        waited = (h[H.H_LAST_MS] + _MINUTE_MS - h[H.H_FLAT_SINCE_MS]) / _MINUTE_MS
        return float(max(cd - waited, 0.0))

    def restarts_by_itself(self) -> bool:
        """False when a halt (this one, or the next) lasts until ``--reset-hard-stop``: a red
        score past ``no_restart_drawdown_threshold`` (terminal) or a cooldown of 0."""
        return not (self.h[H.H_TERMINAL] or self.hp[H.HP_COOLDOWN_MINUTES] <= 0.0)

    def status(self) -> dict[str, Any]:
        h = self.h
        return {
            "enabled": self.enabled,
            "tier": H.TIER_NAMES[self.tier],
            "score": float(h[H.H_SCORE]),
            "peak": float(h[H.H_PEAK]),
            "red_threshold": float(self.hp[H.HP_RED_THRESHOLD]),
            "halted": bool(h[H.H_HALTED]),
            "terminal": bool(h[H.H_TERMINAL]),  # past no_restart_drawdown_threshold
            "restarts_by_itself": self.restarts_by_itself(),  # False: --reset-hard-stop ends it
            "cooldown_left_minutes": self.cooldown_left_minutes(),
            "triggers": int(h[H.H_TRIGGERS]),
            "restarts": int(h[H.H_RESTARTS]),
        }

    # ------------------------------------------------------------------ state

    def load(self) -> None:
        """At start-up, once the book and the prices are in: the saved state, or a fresh one
        (no saved state, or ``--reset-hard-stop``)."""
        if not self.enabled:
            return
        saved = self.bot.state.get(STATE_KEY)
        if saved is None or self.reset:
            equity = self.equity()
            H.hsl_init(self.h, equity)
            self.fresh = True
            # the first sample is the first kline to close after the start (the backtester
            # samples no warm-up candle either)
            self.h[H.H_LAST_MS] = self._latest_kline_ms()
            self._log_event("hard_stop_loaded", self._latest_kline_ms(), fresh=True)
            if saved is not None:
                text = (
                    f"hard stop reset by the operator (--reset-hard-stop): peak = equity now "
                    f"{equity:.2f}, green; was {self._describe(np.array(saved['h']))}"
                )
                self._say(text, "warning", "reset")
            self.save()
            return
        self.h[:] = np.array(saved["h"], dtype=np.float64)
        old_hp = np.array(saved.get("hp", self.hp), dtype=np.float64)
        if old_hp.shape != self.hp.shape or not np.array_equal(old_hp, self.hp):
            log.warning(
                "hard stop: the config's parameters changed since the state was saved; peak, "
                "EMA and halt kept, the new parameters apply from the next sample"
            )
            self.save()
        self._log_event(
            "hard_stop_loaded", self._latest_kline_ms(), last_sample_ms=int(self.h[H.H_LAST_MS])
        )
        if self.h[H.H_HALTED]:
            self.panic_due = True  # finish the panic (closes a kill interrupted) at once
            how = (
                "restarts once flat for the cooldown"
                if self.restarts_by_itself()
                else "never ends by itself: `gridbot live ... --reset-hard-stop` ends it"
            )
            self._say(
                f"hard stop halted since a red trigger (score {self.h[H.H_TRIGGER_SCORE]:.4f}); "
                f"placing nothing, closing any position ({how})",
                "critical",
                "halted",
            )

    def save(self) -> None:
        self.bot.state.set(STATE_KEY, {"h": self.h.tolist(), "hp": self.hp.tolist()})

    def on_transfer(self, balance_before: float, balance_after: float) -> None:
        """A deposit or withdrawal moved the balance: the peak moves with the equity."""
        if not self.enabled or self.fresh:
            return
        # the equity right after it: today's unrealized pnl on the balance the transfer left
        # (the book's balance may not include it yet, or may include later fills: Bybit's log)
        eq_after = self.equity() + (balance_after - self.bot.balance)
        eq_before = eq_after - (balance_after - balance_before)
        self.transfer(eq_before, eq_after)

    def transfer(self, equity_before: float, equity_after: float) -> None:
        if self.enabled and equity_before != equity_after:
            H.hsl_transfer(self.h, equity_before, equity_after)
            log.info(
                "hard stop: a transfer moved the equity %.2f -> %.2f; peak now %.2f",
                equity_before, equity_after, self.h[H.H_PEAK],
            )  # fmt: skip
            self.save()

    # ------------------------------------------------------------------ the sample

    async def before_cycle(self, ts: int) -> None:
        """Before a coin's cycle for the kline opened at ``ts``: the minute's sample (once,
        account-wide) and a panic pass when one is due."""
        if not self.enabled or (ts <= self.h[H.H_LAST_MS] and not self.panic_due):
            return
        async with self.lock:
            if ts > self.h[H.H_LAST_MS]:
                cycle = self.bot.cycle
                assert cycle is not None
                await cycle.klines_aligned(ts)
                # with no coin's cycle in flight: an order decided under the old tier (an entry
                # computed before a red) must not go out after the new tier is in force (the
                # soak caught grid orders created 0.4 s after red: gridbot soak, hard stop)
                async with contextlib.AsyncExitStack() as locks:  # the reconciler's order
                    for c in self.bot.coins.values():
                        await locks.enter_async_context(c.lock)
                    self._sample(ts)
            if self.panic_due:
                try:
                    await self._panic()
                except ExchangeError as exc:  # still red: the next cycle tries again
                    log.warning("hard stop: the red closes failed: %s; again next cycle", exc)
                    self.bot.want_sync()

    def _sample(self, ts: int) -> None:
        if self.bot.book.unexplained:
            # a balance change the account log has not explained yet (Bybit: a withdrawal
            # looks like a loss until then): this minute is skipped, not taken as a drawdown
            self.h[H.H_LAST_MS] = ts
            self.save()
            self.skipped.append(ts)
            log.warning(
                "hard stop: minute %d not sampled: a balance change is not explained yet "
                "(asking the exchange's account log); the tier stays %s",
                ts, H.TIER_NAMES[self.tier],
            )  # fmt: skip
            return
        before = self.tier
        equity, flat = self.equity(), self.flat()
        tier = int(H.hsl_sample(self.h, self.hp, equity, float(ts), flat))
        self.tiers.append((ts, tier))
        self.save()
        if tier != before:
            self._log_event("hard_stop_tier", ts, before=H.TIER_NAMES[before])
        if tier == H.TIER_RED:
            self.panic_due = True
            self._red_new = self._red_new or before != H.TIER_RED
        if tier != before:
            self._tier_changed(before, tier, equity)

    def _tier_changed(self, before: int, tier: int, equity: float) -> None:
        h = self.h
        name = H.TIER_NAMES[tier]
        if tier == H.TIER_RED:
            return  # said with what it closed (_panic)
        if before == H.TIER_RED:
            text = (
                f"hard stop: restarted after the cooldown (flat {self.hp[H.HP_COOLDOWN_MINUTES]:g}"
                f" min): peak = equity {equity:.2f}, green, trading again"
            )
            self._say(text, "warning", "restart")
            return
        what = {
            H.TIER_GREEN: "back to normal",
            H.TIER_YELLOW: "warning",
            H.TIER_ORANGE: "no new positions"
            + (
                ", entries cancelled (closes only)"
                if self.hp[H.HP_ORANGE_MODE] == H.ORANGE_TP_ONLY
                else ""
            ),
        }[tier]
        text = (
            f"hard stop {name}: drawdown score {h[H.H_SCORE]:.4f} (red at "
            f"{self.hp[H.HP_RED_THRESHOLD]:g}), equity {equity:.2f}, peak {h[H.H_PEAK]:.2f}: {what}"
        )
        self._say(text, "info" if tier == H.TIER_GREEN else "warning", name)

    # ------------------------------------------------------------------ red: the panic

    async def _panic(self) -> None:
        """Cancel every order of ours, then close every position the exchange reports."""
        bot = self.bot
        cycle = bot.cycle
        assert cycle is not None
        if self._red_new:
            log.error(
                "hard stop red (score %.4f): cancelling every order, closing every position",
                self.h[H.H_TRIGGER_SCORE],
            )
        await self._settle_sent()
        for c in bot.coins.values():
            async with c.lock:
                await cycle.cancel_all(c)
        snap = await bot.rest(bot.adapter.fetch_account, list(bot.coins))
        to_close = [
            (s, side, float(pos[2 * j]))
            for s, pos in snap.positions.items()
            if s in bot.coins
            for j, side in enumerate(_SIDES)
            if float(pos[2 * j]) >= bot.coins[s].spec.qty_step / 2
        ]
        sent = dict(bot.state.get(STATE_CLOSES, {}))
        orders = []
        for s, side, qty in to_close:
            cid = f"{CLOSE_PREFIX}{'L' if side > 0 else 'S'}{secrets.token_hex(8)}"
            sent[cid] = [s, side, qty]
            orders.append((cid, s, side, qty))
        bot.state.set(STATE_CLOSES, sent)  # before any is sent: a kill leaves them askable
        closed = []
        failed = False
        for cid, s, side, qty in orders:
            got = await send_close(bot, s, side, qty, cid, "hard stop")
            if got is None:
                failed = True  # kept as sent: asked for by client id at the next pass
                continue
            self._settled(cid)
            closed.append(f"{got[0]:g} {s} {'long' if side > 0 else 'short'} @ {got[1]:g}")
            self.closes.append({"symbol": s, "side": side, "qty": got[0], "price": got[1]})
        self.panic_due = failed
        if orders:
            bot.want_sync()
        if self._red_new or orders:
            self._say_red(closed, failed)
        self._red_new = False

    def _say_red(self, closed: list[str], failed: bool) -> None:
        h = self.h
        text = (
            f"hard stop RED: drawdown score {h[H.H_TRIGGER_SCORE]:.4f} >= "
            f"{self.hp[H.HP_RED_THRESHOLD]:g}; every order cancelled, "
            + ("closed at market: " + "; ".join(closed) if closed else "no position to close")
            + ("; some closes failed, again at the next sample" if failed else "")
            + ("" if self.restarts_by_itself() else "; halted for good (--reset-hard-stop ends it)")
        )
        self._say(text, "critical", "red")

    async def _settle_sent(self) -> None:
        """Closes recorded as sent and never settled (a kill, a lost answer): asked for by
        client id, so the positions read next already include them."""
        for cid, (s, _side, _qty) in dict(self.bot.state.get(STATE_CLOSES, {})).items():
            filled, px = await ask_close(self.bot, s, cid)
            log.info("hard stop: close %s found after a restart: filled %g @ %g", cid, filled, px)
            self._settled(cid)

    def _settled(self, cid: str) -> None:
        sent = dict(self.bot.state.get(STATE_CLOSES, {}))
        sent.pop(cid, None)
        self.bot.state.set(STATE_CLOSES, sent)

    # ------------------------------------------------------------------ reporting

    def _latest_kline_ms(self) -> int:
        return int(max((c.last_kline_ts for c in self.bot.coins.values()), default=-1))

    def _log_event(self, event: str, kline_ms: int, **more: Any) -> None:
        """A machine-readable record in the log file (``event``, ``data``): each tier change
        with the kline it was sampled at, and each start's loaded state (the soak's hard stop
        checks read them: backtest.soak_hard_stop)."""
        h = self.h
        data = {
            "kline_ms": kline_ms,
            "tier": H.TIER_NAMES[self.tier],
            "halted": bool(h[H.H_HALTED]),
            "terminal": bool(h[H.H_TERMINAL]),
            "triggers": int(h[H.H_TRIGGERS]),
            "restarts": int(h[H.H_RESTARTS]),
            "score": float(h[H.H_SCORE]),
            **more,
        }
        log.info("%s %s", event, data, extra={"event": event, "data": data})

    @staticmethod
    def _describe(h: np.ndarray) -> str:
        tier = H.TIER_NAMES.get(int(h[H.H_TIER]), "?")
        return f"{tier}, peak {h[H.H_PEAK]:.2f}, halted {bool(h[H.H_HALTED])}"

    def _say(self, text: str, severity: str, what: str) -> None:
        level = {"critical": logging.ERROR, "warning": logging.WARNING}.get(severity, logging.INFO)
        log.log(level, "%s", text)
        self.bot.notify("hard_stop", text=text, severity=severity, what=what, **self.status())
