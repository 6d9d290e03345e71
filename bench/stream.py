"""Benchmark: the live stream's hot path and its latency over loopback.

Measured in one run:

- **replay**: N (default 1,000,000) recorded-shape WS v2 frames — a mix of ticker, trade, ohlc and
  book updates in Kraken's shapes, the book updates carrying real checksums of a 10-level book —
  through the client's path in one process: ``krakked.kraken.ws.decode`` (exact Decimals) +
  ``LiveCache.apply`` (cache + book + checksum check). Frames/s for the mix (target >= 150,000/s on
  one core) and for the book frames alone, against the reference measured in the same run:
  ``orjson.loads`` of the same bytes (floats, nothing done with them).
- **latency**: the simulator (``krakked.sim``, served on loopback) pushes ticker frames at
  ``--rate`` frames/s (default 10,000) for ``--seconds`` to a ``LiveMarket``-style client
  (``KrakenWS`` + ``LiveCache``); each frame carries its send time; p50/p99 of send -> cache
  update (target p99 < 5 ms).

Prints one JSON object. Run: ``uv run python bench/stream.py [--frames N] [--rate R]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from decimal import Decimal
from typing import Any

import orjson

from krakked.market.book import OrderBook
from krakked.market.live import LiveCache

SYMBOLS = [f"C{i:02d}/USD" for i in range(20)]


def _num(value: Decimal) -> str:
    return format(value, "f")


def make_frames(n: int, seed: int = 7) -> tuple[list[bytes], list[bool]]:
    """``n`` frames in Kraken's v2 shapes (40 % book, 25 % ticker, 20 % trade, 15 % ohlc) and
    which of them are book frames. Book updates keep valid checksums of a 10-level book."""
    rng = random.Random(seed)
    books = {s: OrderBook(s, 10, price_decimals=1, qty_decimals=8) for s in SYMBOLS}
    frames: list[bytes] = []
    is_book: list[bool] = []
    trade_id = 1
    for s, book in books.items():  # snapshots first
        bids = [{"price": Decimal(f"{1000 - i}.0"), "qty": Decimal("1.50000000")}
                for i in range(10)]
        asks = [{"price": Decimal(f"{1001 + i}.0"), "qty": Decimal("2.25000000")}
                for i in range(10)]
        book.apply(bids, asks, snapshot=True)
        frames.append(_book_frame("snapshot", s, bids, asks, book.checksum()))
        is_book.append(True)
    while len(frames) < n:
        s = SYMBOLS[rng.randrange(len(SYMBOLS))]
        r = rng.random()
        if r < 0.40:
            book = books[s]
            side = rng.random() < 0.5
            best = book.best_bid() if side else book.best_ask()
            assert best is not None
            offset = Decimal(rng.randrange(0, 12))
            price = best - offset if side else best + offset
            qty = Decimal(rng.randrange(0, 400_000_000)).scaleb(-8) if rng.random() > 0.2 \
                else Decimal("0E-8")
            if qty == 0 and (len(book.bids()) <= 5 if side else len(book.asks()) <= 5):
                qty = Decimal("0.10000000")
            level = [{"price": price, "qty": qty}]
            bids, asks = (level, []) if side else ([], level)
            book.apply(bids, asks)
            frames.append(_book_frame("update", s, bids, asks, book.checksum()))
            is_book.append(True)
            continue
        if r < 0.65:
            frames.append(
                b'{"channel":"ticker","type":"update","data":[{"symbol":"' + s.encode()
                + b'","bid":1000.0,"bid_qty":1.50000000,"ask":1001.0,"ask_qty":2.25000000,'
                b'"last":1000.5,"volume":12345.67891234,"vwap":1000.2,"low":990.0,"high":1010.0,'
                b'"change":-3.5,"change_pct":-0.35,"timestamp":"2026-12-08T10:00:00.123456Z"}]}')
        elif r < 0.85:
            trade_id += 1
            frames.append(
                b'{"channel":"trade","type":"update","data":[{"symbol":"' + s.encode()
                + b'","side":"buy","price":1000.5,"qty":0.01234567,"ord_type":"market",'
                b'"trade_id":' + str(trade_id).encode()
                + b',"timestamp":"2026-12-08T10:00:01.000001Z"}]}')
        else:
            frames.append(
                b'{"channel":"ohlc","type":"update","timestamp":"2026-12-08T10:00:30.5243949Z",'
                b'"data":[{"symbol":"' + s.encode() + b'","open":1000.0,"high":1010.0,'
                b'"low":990.0,"close":1000.5,"trades":12,"volume":30.68066226,"vwap":1000.2,'
                b'"interval_begin":"2026-12-08T10:00:00.000000000Z","interval":1,'
                b'"timestamp":"2026-12-08T10:01:00.000000Z"}]}')
        is_book.append(False)
    return frames, is_book


def _book_frame(kind: str, symbol: str, bids: list[dict[str, Decimal]],
                asks: list[dict[str, Decimal]], checksum: int) -> bytes:
    def levels(side: list[dict[str, Decimal]]) -> str:
        return ",".join(f'{{"price":{_num(v["price"])},"qty":{_num(v["qty"])}}}' for v in side)
    return (f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{symbol}",'
            f'"bids":[{levels(bids)}],"asks":[{levels(asks)}],"checksum":{checksum},'
            f'"timestamp":"2026-12-08T10:00:00.123456Z"}}]}}').encode()


def _decoder() -> Any:
    try:
        from krakked.kraken.ws import decode
    except ImportError:  # before the client landed
        import msgspec
        return msgspec.json.Decoder(float_hook=Decimal).decode
    return decode


def replay(frames: list[bytes], is_book: list[bool]) -> dict[str, Any]:
    decode = _decoder()
    names = {s: s.replace("/", "") for s in SYMBOLS}

    def run(selected: list[bytes]) -> tuple[float, LiveCache]:
        cache = LiveCache(names, decimals={s: (1, 8) for s in SYMBOLS})
        cache.on_connected()
        apply = cache.apply
        start = time.process_time()
        for frame in selected:
            apply(decode(frame))
        return time.process_time() - start, cache

    t_ref = time.process_time()
    for frame in frames:
        orjson.loads(frame)
    t_ref = time.process_time() - t_ref
    t_mix, cache = run(frames)
    book_frames = [f for f, b in zip(frames, is_book, strict=True) if b]
    t_book, book_cache = run(book_frames)
    failures = sum(cache.checksum_failures.values()) + sum(book_cache.checksum_failures.values())
    return {
        "frames": len(frames),
        "mix_frames_per_s": round(len(frames) / t_mix),
        "book_frames": len(book_frames),
        "book_frames_per_s": round(len(book_frames) / t_book),
        "orjson_loads_frames_per_s": round(len(frames) / t_ref),
        "ratio_to_orjson_loads": round(t_ref / t_mix, 3),
        "checksum_failures": failures,
        "malformed": cache.malformed,
        "target_mix_frames_per_s": 150_000,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--no-latency", action="store_true")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    frames, is_book = make_frames(args.frames)
    out["replay"] = replay(frames, is_book)
    del frames
    if not args.no_latency:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from stream_latency import latency  # the loopback half, beside this file

        out["latency"] = latency(args.rate, args.seconds)
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
