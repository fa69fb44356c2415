"""Our client order ids on the wire: deterministic, plus a generation where the exchange never
lets an id be used twice (Bybit's ``orderLinkId`` is unique for ever, history included).

The deterministic id (``bot.live.orders.client_order_id``) makes a create retried after a
timeout a refused duplicate instead of a second order. On Binance an id is free again once
its order ended; on Bybit the generation moves on instead (``<id>-<n>``), and the generations
are saved with the bot's state so that a restarted bot does not reuse an ended order's id.
"""

from __future__ import annotations

__all__ = ["ClientIds"]

_MAX_REMEMBERED = 5000  # generations kept: an older one reused is refused once, then moved on


class ClientIds:
    def __init__(self, reusable: bool) -> None:
        self.reusable = reusable
        self.generations: dict[str, int] = {}
        self.changed = False

    def on_wire(self, cid: str) -> str:
        """The id to send for the deterministic id ``cid``."""
        if self.reusable:
            return cid
        gen = self.generations.get(cid, 0)
        return f"{cid}-{gen:x}" if gen else cid

    def retire(self, wire_id: str) -> None:
        """An order with ``wire_id`` ended: where ids are never reused, move past it."""
        if self.reusable or not wire_id:
            return
        base, _, gen = wire_id.partition("-")
        try:
            n = int(gen, 16) + 1 if gen else 1
        except ValueError:
            return  # not one of our ids
        if n > self.generations.get(base, 0):
            self.generations.pop(base, None)  # re-insert: the newest last
            self.generations[base] = n
            self.changed = True
            while len(self.generations) > _MAX_REMEMBERED:
                del self.generations[next(iter(self.generations))]

    def load(self, saved: dict[str, int] | None) -> None:
        if saved:
            self.generations.update({str(k): int(v) for k, v in saved.items()})
