"""The read-only status page and JSON API of a running bot (aiohttp, in the bot's event loop).

``GET /`` is one HTML page whose inline script polls ``GET /api/status`` (the dict from
:func:`bot.live.status_snapshot.build_status`) every two seconds. Nothing can be changed
through it: only GET and HEAD are routed.

Binding: 127.0.0.1 by default. Another address needs a token (``live.status_token_env``, an
environment variable); when a token is set it is checked on every request, as
``Authorization: Bearer <token>`` or ``?token=<token>`` (the page passes on the one in its own
address). The token is never written into the page.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

__all__ = ["PAGE", "StatusServer"]

log = logging.getLogger("gridbot.live.status")


class StatusServer:
    def __init__(
        self,
        get_status: Callable[[], dict[str, Any]],
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str | None = None,
    ) -> None:
        self.get_status = get_status
        self.host = host
        self.port = port
        self.token = token
        self._runner: web.AppRunner | None = None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if self.token:
            given = request.query.get("token", "")
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                given = auth[7:]
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return web.json_response({"error": "a valid token is required"}, status=401)
        resp = await handler(request)
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html", charset="utf-8")

    async def _api(self, request: web.Request) -> web.Response:
        try:
            status = self.get_status()
        except Exception as exc:  # a status bug must not look like a dead bot
            log.exception("status: building the status failed")
            return web.json_response({"error": f"status failed: {type(exc).__name__}"}, status=500)
        return web.Response(
            body=orjson.dumps(status, option=orjson.OPT_SERIALIZE_NUMPY, default=str),
            content_type="application/json",
        )

    async def start(self) -> str:
        """Bind and serve; returns the page's URL (port 0: the ephemeral port chosen)."""
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self._page)
        app.router.add_get("/api/status", self._api)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.url

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gridbot status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1em;background:#fafafa;color:#222}
h1{font-size:1.3em;margin:0 0 .3em} h2{font-size:1.1em;margin:.2em 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em .8em;margin:.6em 0}
table{border-collapse:collapse} td,th{padding:.1em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}
.bar{width:12em;height:.8em;background:#eee;border-radius:3px;display:inline-block;
position:relative;vertical-align:middle}
.bar>div{height:100%;border-radius:3px;background:#4a8}
.bar.warn>div{background:#d93} .bar.over>div{background:#c33}
.up{color:#281} .down{color:#c33;font-weight:bold} .critical{color:#c33}
.warning{color:#a60} .muted{color:#777} #error{color:#c33;font-weight:bold}
.coins{display:flex;flex-wrap:wrap;gap:.6em} .coins .card{flex:1 1 26em;margin:0}
</style></head>
<body>
<h1>gridbot <span id="mode" class="muted"></span></h1>
<div class="muted">updated <span id="updated">never</span>; up <span id="uptime">-</span></div>
<div id="error"></div>
<div class="card"><h2>Account</h2><table id="account"></table>
<svg id="curve" width="600" height="120" viewBox="0 0 600 120" style="display:none"></svg></div>
<div id="coins" class="coins"></div>
<div class="card"><h2>Events</h2><table id="events"></table></div>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const api = "api/status" + (token ? "?token=" + encodeURIComponent(token) : "");
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
const num = (x, d) => x === null || x === undefined ? "-" :
  Number(x).toLocaleString("en-US", d === undefined ? {maximumSignificantDigits: 7}
    : {maximumFractionDigits: d});
const pct = (x) => x === null || x === undefined ? "-" : num(x, 2) + " %";
const iso = (t) => new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
const dur = (s) => s === null || s === undefined ? "-" : s < 120 ? num(s, 0) + " s" :
  s < 7200 ? num(s / 60, 1) + " min" : num(s / 3600, 1) + " h";
function row(cells, tag) {
  tag = tag || "td";
  return "<tr>" + cells.map((c) => "<" + tag + ">" + c + "</" + tag + ">").join("") + "</tr>";
}
function bar(we, wel) {
  const f = wel > 0 ? we / wel : 0;
  const cls = f > 1 ? "bar over" : f > 0.8 ? "bar warn" : "bar";
  return '<span class="' + cls + '" title="' + num(f * 100, 1) + ' % of the limit"><div style="width:'
    + Math.min(100, f * 100).toFixed(1) + '%"></div></span> ' + num(we, 4) + " / " + num(wel, 4);
}
function curve(points) {
  const svg = $("curve");
  if (!points || points.length < 2) { svg.style.display = "none"; return; }
  svg.style.display = "";
  const ys = points.map((p) => p[1]), xs = points.map((p) => p[0]);
  const y0 = Math.min(...ys), y1 = Math.max(...ys), x0 = xs[0], x1 = xs[xs.length - 1];
  const sx = (x) => 5 + (x - x0) / Math.max(x1 - x0, 1e-9) * 590;
  const sy = (y) => 110 - (y - y0) / Math.max(y1 - y0, 1e-9) * 100;
  svg.innerHTML = '<polyline fill="none" stroke="#36c" stroke-width="1.5" points="'
    + points.map((p) => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ") + '"/>'
    + '<text x="5" y="10" font-size="10" fill="#777">equity ' + num(y1, 2) + '</text>'
    + '<text x="5" y="119" font-size="10" fill="#777">' + num(y0, 2) + '</text>';
}
function coin(c) {
  let h = '<div class="card coin" id="coin-' + esc(c.symbol) + '"><h2>' + esc(c.symbol)
    + ' <span class="muted">' + num(c.price) + "</span></h2><table>";
  h += row(["", "size", "avg price", "WE / limit", "uPnL"], "th");
  for (const side of ["long", "short"]) {
    const s = c[side];
    h += row([side, num(s.size), num(s.price), bar(s.wallet_exposure, s.wallet_exposure_limit),
      num(s.upnl, 2)]);
  }
  h += "</table><table>";
  h += row(["bankruptcy", num(c.bankruptcy_price), pct(c.bankruptcy_distance_pct)]);
  h += row(["liquidation", num(c.liquidation_price), pct(c.liquidation_distance_pct)]);
  h += "</table><details open><summary>" + c.open_orders.length + " open orders</summary><table>";
  h += c.open_orders.map((o) => row([o.side + " " + o.position_side, num(o.qty), num(o.price),
    esc(o.kind)])).join("");
  h += "</table></details><details><summary>recent fills</summary><table>";
  h += c.recent_fills.map((f) => row([iso(f.time_ms / 1000), f.side + " " + f.position_side,
    num(f.qty), num(f.price)])).join("");
  return h + "</table></details></div>";
}
function render(s) {
  $("mode").textContent = (s.dry_run ? "dry run" : "live") + (s.exchange ? " on " + s.exchange : "");
  $("updated").textContent = iso(s.time);
  $("updated").dataset.t = s.time;
  $("uptime").textContent = dur(s.uptime_seconds);
  const a = s.account;
  let h = row(["balance", num(a.balance, 2) + " USDT"]) + row(["equity", num(a.equity, 2) + " USDT"])
    + row(["balance peak", num(a.balance_peak, 2)]) + row(["fills", a.n_fills])
    + row(["errors", a.errors]) + row(["last reconciliation", dur(s.last_reconciliation_age_seconds) + " ago"]);
  for (const [name, st] of Object.entries(s.streams || {})) {
    h += row([name + " stream", '<span class="' + (st.up ? "up" : "down") + '">'
      + (st.up ? "up" : "DOWN") + "</span> for " + dur(st.for_seconds)]);
  }
  const hs = s.hard_stop;
  if (hs && hs.enabled) {
    h += row(["hard stop", '<span class="' + (hs.halted ? "down" : "up") + '">' + esc(hs.tier)
      + (hs.halted ? " HALTED" + (hs.restarts_by_itself ? "" : " (never ends by itself: --reset-hard-stop ends it)") : "")
      + "</span> score " + num(hs.score, 4) + " / " + num(hs.red_threshold, 4) + ", peak "
      + num(hs.peak, 2) + (hs.cooldown_left_minutes != null ? ", cooldown left "
      + num(hs.cooldown_left_minutes, 1) + " min" : "")]);
  }
  if (s.alerts) {
    h += row(["alerts", s.alerts.enabled ? s.alerts.format + ": " + s.alerts.sent + " sent, "
      + s.alerts.failed + " failed, " + s.alerts.dropped + " dropped" : "off"]);
  }
  $("account").innerHTML = h;
  curve(s.equity_curve);
  $("coins").innerHTML = s.coins.map(coin).join("");
  $("events").innerHTML = (s.events || []).slice(0, 50).map((e) =>
    '<tr class="' + esc(e.severity) + '"><td>' + iso(e.time) + "</td><td>" + esc(e.kind)
    + '</td><td style="text-align:left">' + esc(e.text) + "</td></tr>").join("")
    || row(['<span class="muted">none</span>']);
}
async function poll() {
  try {
    const r = await fetch(api, {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    $("error").textContent = "";
  } catch (e) {
    $("error").textContent = "cannot reach the bot: " + e.message;
  }
  setTimeout(poll, 2000);
}
poll();
</script></body></html>
"""
