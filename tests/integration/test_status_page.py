"""The status page in a real headless Chromium (Debian's, installed by scripts/ensure-chromium),
driven by Playwright: it loads, draws the chart from candles in the store, marks a stale pair
stale, logs no console error and asks nothing of any host but the service."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from krakked.market_data import Market
from krakked.service.app import create_app
from krakked.sim import SimClock, Simulator
from tests.integration.servicekit import FakeIngestor, FakeRun, FakeScheduler, served
from tests.integration.simkit import sim_market

NOW = datetime(2026, 11, 22, 12, 7, 30, tzinfo=UTC)
CHROMIUM = os.environ.get("KRAKKED_CHROMIUM", "/usr/bin/chromium")
UP, DOWN = (38, 166, 154), (239, 83, 80)  # the chart's candle colours (#26a69a, #ef5350)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture
def market(sim: Simulator, tmp_path: Path, clock: SimClock) -> Iterator[Market]:
    """ETHUSD's 15m candles stored two hours ago, XBTUSD's now."""
    with sim_market(sim, tmp_path) as m:
        m.backfill_ohlc("ETHUSD", "15m")
        clock.advance(2 * 3600)
        m.backfill_ohlc("XBTUSD", "15m")
        yield m


def test_status_page_draws_stored_candles_and_marks_the_stale_pair(
        browser: Browser, market: Market) -> None:
    now = NOW + timedelta(hours=2)
    ingestor = FakeIngestor(market)
    ingestor.runs.append(FakeRun("r1", "schedule", now, now, "partial", 2, 1, 8,
                                 [{"pair": "ETHUSD", "error": "EQuery:Unknown asset pair"}]))
    app = create_app(market, ingestor, FakeScheduler(now + timedelta(minutes=7, seconds=30)),
                     token=None, clock=lambda: now)
    with served(app) as api:
        base = str(api.base_url).rstrip("/")
        expected = api.get("/api/candles/XBTUSD", params={"tf": "15m", "limit": 500}).json()
        page = browser.new_page()
        problems: list[str] = []
        foreign: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: problems.append(str(exc)))

        def only_the_service(route: Any) -> None:
            if route.request.url.startswith(base):
                route.continue_()
            else:
                foreign.append(route.request.url)
                route.abort()

        page.route("**/*", only_the_service)
        page.goto(f"{base}/?pair=XBTUSD&tf=15m")
        page.wait_for_selector("body[data-loaded='1']", timeout=20_000)
        page.wait_for_function("Number(document.getElementById('chart').dataset.candles) > 0",
                               timeout=20_000)
        drawn = int(page.get_attribute("#chart", "data-candles") or 0)
        colours = page.evaluate("""() => {
            const seen = new Set();
            for (const c of document.querySelectorAll('#chart canvas')) {
                if (!c.width || !c.height) continue;
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                for (let i = 0; i < d.length; i += 4)
                    if (d[i + 3] === 255) seen.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);
            }
            return [...seen];
        }""")
        eth = page.locator("#coverage tr[data-pair='ETHUSD'][data-timeframe='15m']")
        xbt = page.locator("#coverage tr[data-pair='XBTUSD'][data-timeframe='15m']")
        eth_class, eth_text = eth.get_attribute("class"), eth.locator("td.freshness").inner_text()
        xbt_class, xbt_text = xbt.get_attribute("class"), xbt.locator("td.freshness").inner_text()
        alerts = page.locator("#alerts").inner_text()
        runs = page.locator("#runs tbody tr").all_inner_texts()
        page.close()
    assert drawn == len(expected["candles"]) > 100
    assert {",".join(map(str, UP)), ",".join(map(str, DOWN))} <= set(colours)
    assert (eth_class, eth_text) == ("stale", "stale")
    assert (xbt_class, xbt_text) == ("fresh", "fresh")
    assert "cursor_lag" in alerts and "ETHUSD 15m" in alerts
    assert len(runs) == 1 and "partial" in runs[0]
    assert "ETHUSD: EQuery:Unknown asset pair" in runs[0]
    assert problems == [] and foreign == []
