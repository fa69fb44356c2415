"""Start-up safety: the leverage check refuses (with the reason) before any order; API keys
never reach logs or output; the venue refuses a bad signature and accepts the bot's."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from backtest.replay import round_to_ticks
from backtest.venue.server import Venue, VenueConfig
from bot.config import parse_config
from bot.errors import AuthenticationError, ConfigError
from bot.exchange.registry import make_adapter
from bot.live.bot import LiveBot, StartupRefused
from bot.live.credentials import install_redaction, load_credentials
from tests.test_live_replay import sample, trading_config

KEY, SECRET = "startup-key-0123456789abcdef", "startup-secret-fedcba9876543210"


async def _with_venue(fn):
    venue = Venue(round_to_ticks(sample(0.2)), VenueConfig(start_index=60))
    venue.add_account(KEY, SECRET, 1000.0)
    await venue.start()
    try:
        return await fn(venue)
    finally:
        await venue.stop()


def test_leverage_check_refuses_with_the_reason_and_places_nothing(tmp_path):
    config = trading_config(leverage=2, state_dir=str(tmp_path))  # needs > 1.0 + 1.0

    async def go(venue):
        adapter = make_adapter("binance", KEY, SECRET, base_url=venue.rest_url, throttle=False)
        bot = LiveBot(config, adapter, ws_url=venue.ws_url, symbols=["BTCUSDT", "DOGEUSDT"])
        try:
            with pytest.raises(StartupRefused) as exc:
                await bot.run()
        finally:
            await adapter.close()
        acct = venue.engine.accounts[KEY]
        return str(exc.value), acct

    reason, acct = asyncio.run(_with_venue(go))
    assert "leverage 2 must exceed" in reason and "2" in reason
    assert acct.open_orders == {} and acct.closed_orders == {}
    assert acct.leverage == {}  # refused before changing anything on the account


def test_keys_never_logged_and_bad_signature_refused(tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    uninstall = install_redaction([KEY, SECRET])
    config = trading_config(state_dir=str(tmp_path))

    async def go(venue):
        good = make_adapter("binance", KEY, SECRET, base_url=venue.rest_url, throttle=False)
        bad = make_adapter(
            "binance", KEY, "not-the-secret", base_url=venue.rest_url, throttle=False
        )
        try:
            with pytest.raises(AuthenticationError) as exc:
                await bad.fetch_account()
            snap = await good.fetch_account()
            bot = LiveBot(config, good, ws_url=venue.ws_url, symbols=["BTCUSDT"])
            task = asyncio.create_task(bot.run())
            await bot.wait_ready()
            for _ in range(100):  # bounded: until the first orders rest
                if venue.engine.accounts[KEY].open_orders:
                    break
                await asyncio.sleep(0.05)
            logging.getLogger("gridbot.live.test").info("a careless message with %s", SECRET)
            bot.stop()
            await asyncio.wait_for(task, 10)
            return str(exc.value), snap, venue.engine.accounts[KEY]
        finally:
            await good.close()
            await bad.close()

    try:
        message, snap, acct = asyncio.run(_with_venue(go))
    finally:
        uninstall()
    assert "-1022" in message  # Signature for this request is not valid
    assert snap.balance == pytest.approx(1000.0)
    assert acct.open_orders  # the bot's signed requests were accepted
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err, message):
        assert KEY not in text and SECRET not in text
    assert "a careless message with ***" in caplog.text


def test_key_file_must_be_private(tmp_path, monkeypatch):
    f = tmp_path / "keys.json"
    f.write_text('{"apiKey": "k-123456", "secret": "s-123456"}')
    os.chmod(f, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_credentials(parse_config({"live": {"key_file": str(f)}}).live)
    os.chmod(f, 0o600)
    assert load_credentials(parse_config({"live": {"key_file": str(f)}}).live) == (
        "k-123456",
        "s-123456",
    )
    monkeypatch.delenv("GRIDBOT_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="GRIDBOT_API_KEY"):
        load_credentials(parse_config({}).live)
