"""Kraken's public WebSocket v2 connection: subscribe, heartbeat and ping, reconnect, resubscribe.

:class:`KrakenWS` keeps one connection to ``wss://ws.kraken.com/v2`` (or the simulator's
``ws://host:port/v2``) and hands every decoded data frame (``ticker``, ``trade``, ``ohlc``,
``book``, ``instrument``) to ``on_frame``, in order, with exact ``Decimal`` numbers. Inside it:

* subscriptions go out in batches of ``batch_size`` symbols, paced, and wait for Kraken's one
  ack per symbol; ``Exceeded msg rate`` backs off and retries the batch, other nacks are
  reported as rejected (Kraken's own text);
* an application ``ping`` every ``ping_interval``; no frame at all for ``dead_after`` seconds
  means the connection is dead: it is dropped and reopened;
* reconnects follow :class:`ReconnectPolicy` (exponential backoff with jitter, a fast first
  retry, ≥ 5 s after a ``maintenance`` status, never more than 150 attempts per rolling
  10 minutes, Cloudflare's cap) and then resubscribe everything with the same parameters (the
  trade channel with ``snapshot=True`` so the overlap can be deduplicated downstream).

Connection events go to ``on_event`` and to the ``krakked.kraken.ws`` logger once each, never
per message; URLs are logged without query strings. Symbols are v2 names (``BTC/USD``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException

from krakked.errors import MalformedResponseError, NetworkError, UsageError
from krakked.kraken.http import USER_AGENT

__all__ = [
    "DATA_CHANNELS",
    "DEFAULT_WS_URL",
    "MAX_FRAME_BYTES",
    "KrakenWS",
    "MalformedFrame",
    "ReconnectPolicy",
    "SubscribeResult",
    "WSEvent",
    "decode",
]

log = logging.getLogger("krakked.kraken.ws")

DEFAULT_WS_URL = "wss://ws.kraken.com/v2"
DATA_CHANNELS = frozenset({"ticker", "trade", "ohlc", "book", "instrument"})
#: Largest frame accepted: a 1000-level book snapshot is ≈ 100 KB; room for far more.
MAX_FRAME_BYTES = 16 * 2**20
MSG_RATE_ERROR = "Exceeded msg rate"
ALREADY_SUBSCRIBED = "Already subscribed"
#: System states after which a reconnect waits at least ``after_maintenance`` seconds.
SLOW_RECONNECT_STATES = frozenset({"maintenance", "cancel_only"})
#: Parameters that a resubscribe after a reconnect forces, per channel.
RESUBSCRIBE_OVERRIDES: dict[str, dict[str, Any]] = {"trade": {"snapshot": True}}

_decoder = msgspec.json.Decoder(float_hook=Decimal)
_encoder = msgspec.json.Encoder()


class MalformedFrame(MalformedResponseError):
    """A WS frame that is not a JSON object (skipped and counted by :class:`KrakenWS`)."""


def decode(frame: bytes | str) -> dict[str, Any]:
    """Decode one WS frame: numbers with a fraction become exact ``Decimal`` (wire digits kept),
    integers stay ``int``. Raises :class:`MalformedFrame` if it is not a JSON object."""
    try:
        msg = _decoder.decode(frame)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise MalformedFrame(f"frame is not JSON ({exc})", endpoint="ws") from None
    if not isinstance(msg, dict):
        raise MalformedFrame(f"frame is a JSON {type(msg).__name__}, not an object", endpoint="ws")
    return msg


def safe_url(url: str) -> str:
    """``url`` without user info, query string or fragment: what logs and errors may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class WSEvent:
    """A connection event: ``connected``, ``disconnected``, ``reconnecting``, ``subscribed``,
    ``rejected``, ``resubscribed``, ``status`` (system status change) or ``malformed``."""

    kind: str
    detail: str = ""
    symbols: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubscribeResult:
    """What Kraken acknowledged: ``accepted`` symbols, ``rejected`` symbol -> Kraken's error text.

    ``pending`` holds symbols whose ack was lost with the connection: they stay subscribed and
    are sent again after the reconnect (a rejection then comes as a ``rejected`` event)."""

    channel: str
    accepted: tuple[str, ...]
    rejected: dict[str, str]
    pending: tuple[str, ...] = ()


@dataclass
class ReconnectPolicy:
    """When to try the next connection: ``delay(failures)`` seconds to wait before it.

    ``failures`` counts attempts failed since the last good connection: the first retry comes
    within ``first_delay`` s (Kraken: reconnect at once after a random drop), later ones wait
    ``base·2^(n-1)`` ±``jitter`` capped at ``cap``; after a maintenance status at least
    ``after_maintenance``; and never more than ``max_attempts`` attempts (recorded with
    :meth:`record_attempt`) in any rolling ``window`` seconds.
    """

    first_delay: float = 0.5
    base: float = 1.0
    cap: float = 60.0
    jitter: float = 0.2
    after_maintenance: float = 5.0
    max_attempts: int = 150
    window: float = 600.0
    clock: Callable[[], float] = time.monotonic
    rng: Callable[[], float] = random.random
    attempts: deque[float] = field(default_factory=deque, repr=False)

    def record_attempt(self) -> None:
        """Count one connection attempt, now, in the rolling window."""
        self.attempts.append(self.clock())

    def delay(self, failures: int, *, maintenance: bool = False) -> float:
        """Seconds to wait before the next attempt (window included)."""
        if failures <= 0:
            wait = self.first_delay * self.rng()
        else:
            nominal = min(self.cap, self.base * 2 ** (failures - 1))
            wait = min(self.cap, nominal * (1 + self.jitter * (2 * self.rng() - 1)))
        if maintenance:
            wait = max(wait, self.after_maintenance)
        return max(wait, self.window_wait())

    def window_wait(self) -> float:
        """Seconds until one more attempt fits in the rolling window (0 if it fits now)."""
        now = self.clock()
        while self.attempts and self.attempts[0] <= now - self.window:
            self.attempts.popleft()
        if len(self.attempts) < self.max_attempts:
            return 0.0
        return self.attempts[-self.max_attempts] + self.window - now


@dataclass
class _Request:
    """One subscribe/unsubscribe request waiting for its per-symbol acks."""

    symbols: tuple[str, ...]
    future: asyncio.Future[None]
    outcome: dict[str, str | None] = field(default_factory=dict)
    no_symbol_ack: bool = False

    def ack(self, symbol: str | None, error: str | None) -> None:
        if symbol is None:
            if not self.symbols:
                self.no_symbol_ack = True
            else:  # an error for the whole request
                for sym in self.symbols:
                    self.outcome.setdefault(sym, error or "rejected")
        elif symbol in self.symbols:
            self.outcome[symbol] = error
        done = self.no_symbol_ack if not self.symbols else len(self.outcome) == len(self.symbols)
        if done and not self.future.done():
            self.future.set_result(None)


@dataclass
class _Group:
    """Symbols subscribed to one channel with one set of parameters."""

    channel: str
    params: dict[str, Any]
    symbols: dict[str, None] = field(default_factory=dict)  # ordered set


def _params_key(channel: str, params: dict[str, Any]) -> tuple[str, str]:
    return channel, repr(sorted(params.items()))


class KrakenWS:
    """One public WS v2 connection that stays up: see the module docstring.

    ``clock`` times frames, pings, dead-connection checks and the reconnect window; ``sleep``
    is awaited for every deliberate wait (backoff, pacing, book resync), so tests inject both.
    """

    def __init__(
        self,
        url: str = DEFAULT_WS_URL,
        *,
        on_frame: Callable[[dict[str, Any]], None],
        on_event: Callable[[WSEvent], None] | None = None,
        ping_interval: float = 10.0,
        dead_after: float = 15.0,
        batch_size: int = 50,
        ack_timeout: float = 10.0,
        backoff: ReconnectPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        request_interval: float = 0.25,
        msg_rate_backoff: float = 1.0,
        msg_rate_retries: int = 5,
        resync_wait: float = 1.0,
        resync_interval: float = 30.0,
        start_attempts: int = 5,
        stable_after: float = 10.0,
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        if not 0 < ping_interval < dead_after:
            raise UsageError(
                f"ping_interval ({ping_interval}) must be above 0 and below dead_after "
                f"({dead_after}): the pong is what keeps an idle connection alive")
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, not {batch_size}")
        self.url = url
        self._on_frame = on_frame
        self._on_event = on_event
        self.ping_interval = ping_interval
        self.dead_after = dead_after
        self.batch_size = batch_size
        self.ack_timeout = ack_timeout
        self.policy = backoff if backoff is not None else ReconnectPolicy(clock=clock)
        self._clock = clock
        self._sleep = sleep
        self.request_interval = request_interval
        self.msg_rate_backoff = msg_rate_backoff
        self.msg_rate_retries = msg_rate_retries
        self.resync_wait = resync_wait
        self.resync_interval = resync_interval
        self.start_attempts = max(1, start_attempts)
        self.stable_after = stable_after
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.max_frame_bytes = max_frame_bytes

        self._ws: ClientConnection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self._req_ids = itertools.count(1)
        self._requests: dict[int, _Request] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._last_request_at: float | None = None
        self._send_lock = asyncio.Lock()
        self._resync_at: dict[tuple[str, str], float] = {}
        self._resyncing: set[tuple[str, str]] = set()
        self._connected_at = 0.0
        self._last_frame_at: float | None = None
        self._slow_reconnect = False
        self._dead: ClientConnection | None = None
        self._malformed_logged = 0
        self._stats: dict[str, int] = dict.fromkeys(
            ("connects", "reconnects", "attempts", "frames", "data_frames", "malformed",
             "pings", "pongs", "resyncs", "resyncs_skipped", "handler_errors"), 0)
        self._rejected: dict[str, str] = {}
        self._system: str | None = None

    # ------------------------------------------------------------------ public API
    @property
    def connected(self) -> bool:
        """True while a connection is open (it may be resubscribing)."""
        return self._ws is not None and not self._stopping

    async def start(self) -> None:
        """Connect, retrying the first connection per the policy (``start_attempts`` in all);
        raises :class:`NetworkError` naming the URL if it never connects. Idempotent."""
        if self._started:
            return
        self._started = True
        self._stopping = False
        failures = 0
        last_error = ""
        for attempt in range(self.start_attempts):
            if attempt:
                wait = self.policy.delay(failures - 1, maintenance=self._slow_reconnect)
                self._event("reconnecting", f"attempt {attempt + 1} in {wait:.1f} s")
                await self._sleep(wait)
            try:
                self._ws = await self._open()
                break
            except NetworkError as exc:
                failures += 1
                last_error = exc.message
        else:
            self._started = False
            raise NetworkError(
                f"{safe_url(self.url)}: could not connect after {self.start_attempts} "
                f"attempts ({last_error})", endpoint="ws")
        self._supervisor = asyncio.create_task(self._run(), name="krakked-ws")

    async def stop(self) -> None:
        """Close the connection and end every task of this client; safe to call twice."""
        if not self._started:
            return
        self._stopping = True
        self._started = False
        supervisor, self._supervisor = self._supervisor, None
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        self._ws = None
        self._fail_requests()
        self._event("disconnected", "stopped")

    async def subscribe(self, channel: str, symbols: Sequence[str], **params: Any
                        ) -> SubscribeResult:
        """Subscribe ``symbols`` (v2 names) to ``channel`` with Kraken's ``params`` (``depth``,
        ``interval``, ``snapshot``...), in batches, and report Kraken's per-symbol answers.
        Accepted symbols are resubscribed after every reconnect."""
        self._require_started("subscribe")
        wanted = tuple(dict.fromkeys(symbols))
        key = _params_key(channel, params)
        group = self._groups.setdefault(key, _Group(channel, dict(params)))
        before = set(group.symbols)
        group.symbols.update(dict.fromkeys(wanted))
        result = await self._request("subscribe", channel, wanted, params)
        for sym, error in result.rejected.items():
            if not (sym in before and error == ALREADY_SUBSCRIBED):  # still subscribed
                group.symbols.pop(sym, None)
        if not group.symbols and (wanted or result.rejected):
            self._groups.pop(key, None)
        self._record(result, "subscribed")
        return result

    async def unsubscribe(self, channel: str, symbols: Sequence[str], **params: Any
                          ) -> SubscribeResult:
        """Unsubscribe ``symbols`` from ``channel`` (every parameter set of that channel if
        ``params`` is empty); they are no longer resubscribed after a reconnect."""
        self._require_started("unsubscribe")
        wanted = tuple(dict.fromkeys(symbols))
        key = _params_key(channel, params)
        keys = [key] if key in self._groups else [
            k for k, g in self._groups.items() if g.channel == channel and not params]
        groups = [self._groups[k] for k in keys]
        for k, group in zip(keys, groups, strict=True):
            for sym in wanted:
                group.symbols.pop(sym, None)
            if not group.symbols:
                del self._groups[k]
        send_params = params or (dict(groups[0].params) if len(groups) == 1 else {})
        result = await self._request("unsubscribe", channel, wanted, send_params)
        log.info("unsubscribed %s: %d symbol(s)", channel, len(result.accepted))
        return result

    async def resubscribe(self, channel: str, symbol: str) -> None:
        """Resync one subscription (a book whose checksum failed): unsubscribe, wait
        ``resync_wait`` (≥ 1 s against Kraken), subscribe again with the same parameters. At
        most once per ``resync_interval`` s per (channel, symbol); extra calls are skipped."""
        self._require_started("resubscribe")
        key = (channel, symbol)
        now = self._clock()
        last = self._resync_at.get(key)
        if key in self._resyncing or (last is not None and now - last < self.resync_interval):
            self._stats["resyncs_skipped"] += 1
            return
        group = next((g for g in self._groups.values()
                      if g.channel == channel and symbol in g.symbols), None)
        if group is None:
            return
        self._resyncing.add(key)
        self._resync_at[key] = now
        self._stats["resyncs"] += 1
        log.info("resyncing %s %s", channel, symbol)
        try:
            await self._request("unsubscribe", channel, (symbol,), group.params)
            await self._sleep(self.resync_wait)
            result = await self._request("subscribe", channel, (symbol,), group.params)
            if result.rejected:
                group.symbols.pop(symbol, None)
                self._record(result, "subscribed")
        finally:
            self._resyncing.discard(key)

    def stats(self) -> dict[str, Any]:
        """Counters and state: connected, connects, reconnects, frames, malformed, rejected
        {symbol: error}, last_frame_age (s or None), system, subscriptions {channel: [symbols]},
        plus attempts, data_frames, pings, pongs, resyncs, resyncs_skipped, handler_errors."""
        subs: dict[str, list[str]] = {}
        for group in self._groups.values():
            listed = subs.setdefault(group.channel, [])
            listed.extend(s for s in group.symbols if s not in listed)
        age = None if self._last_frame_at is None else max(0.0, self._clock() - self._last_frame_at)
        return {"connected": self.connected, **self._stats, "rejected": dict(self._rejected),
                "last_frame_age": age, "system": self._system, "subscriptions": subs}

    # ------------------------------------------------------------------ connection
    async def _open(self) -> ClientConnection:
        self.policy.record_attempt()
        self._stats["attempts"] += 1
        try:
            ws = await connect(
                self.url, open_timeout=self.open_timeout, ping_interval=None,
                close_timeout=self.close_timeout, max_size=self.max_frame_bytes,
                max_queue=4096, user_agent_header=USER_AGENT)
        except InvalidURI:
            raise UsageError(f"not a WebSocket URL: {safe_url(self.url)!r}") from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            reason = (f"no handshake within {self.open_timeout:g} s"
                      if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__)
            log.warning("ws %s: connection failed: %s", safe_url(self.url), reason)
            raise NetworkError(reason, endpoint="ws") from None
        now = self._clock()
        self._connected_at = now
        self._last_frame_at = now
        self._malformed_logged = 0
        self._stats["connects"] += 1
        if self._stats["connects"] > 1:
            self._stats["reconnects"] += 1
        self._event("connected", safe_url(self.url))
        return ws

    async def _run(self) -> None:
        """Serve the connection; on a drop, reconnect per the policy and resubscribe."""
        reconnected = False
        while not self._stopping:
            ws = self._ws
            assert ws is not None
            reason = await self._serve(ws, resubscribe=reconnected)
            if self._stopping:
                return
            self._ws = None
            self._fail_requests()
            self._event("disconnected", reason)
            # a connection that died young counts as a failure: no fast retry loop
            failures = 0 if self._clock() - self._connected_at >= self.stable_after else 1
            for attempt in itertools.count(1):
                wait = self.policy.delay(failures, maintenance=self._slow_reconnect)
                self._event("reconnecting", f"attempt {attempt} in {wait:.1f} s")
                await self._sleep(wait)
                try:
                    self._ws = await self._open()
                    break
                except NetworkError:
                    failures += 1
            reconnected = True

    async def _serve(self, ws: ClientConnection, *, resubscribe: bool) -> str:
        reader = asyncio.create_task(self._read(ws))
        keepalive = asyncio.create_task(self._keepalive(ws))
        resub = asyncio.create_task(self._resubscribe_all()) if resubscribe else None
        try:
            return await reader
        finally:
            for task in (keepalive, resub, reader):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _read(self, ws: ClientConnection) -> str:
        reason = "closed by server"
        try:
            async for raw in ws:
                self._handle(raw)
        except ConnectionClosed as exc:
            reason = f"connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
        except OSError as exc:
            reason = f"connection error ({type(exc).__name__})"
        return f"no frame for {self.dead_after:g} s" if self._dead is ws else reason

    async def _keepalive(self, ws: ClientConnection) -> None:
        tick = min(self.ping_interval, self.dead_after) / 4
        last_ping = self._clock()
        while True:
            await asyncio.sleep(tick)
            now = self._clock()
            if self._last_frame_at is not None and now - self._last_frame_at >= self.dead_after:
                log.warning("ws %s: no frame for %.1f s, dropping the connection",
                            safe_url(self.url), now - self._last_frame_at)
                self._dead = ws
                ws.transport.abort()
                return
            if now - last_ping >= self.ping_interval:
                last_ping = now
                self._stats["pings"] += 1
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(_encoder.encode(
                        {"method": "ping", "req_id": next(self._req_ids)}).decode())

    def _handle(self, raw: bytes | str) -> None:
        self._last_frame_at = self._clock()
        self._stats["frames"] += 1
        try:
            msg = decode(raw)
        except MalformedFrame as exc:
            self._stats["malformed"] += 1
            if self._malformed_logged < 5:
                self._malformed_logged += 1
                log.warning("ws: malformed frame skipped: %s%s", exc.message,
                            " (further ones are counted, not logged)"
                            if self._malformed_logged == 5 else "")
            self._event("malformed", exc.message, log_it=False)
            return
        channel = msg.get("channel")
        if channel is not None:
            if channel == "heartbeat":
                return
            if channel == "status":
                self._on_status(msg)
                return
            self._stats["data_frames"] += 1
            try:
                self._on_frame(msg)
            except Exception:
                self._stats["handler_errors"] += 1
                if self._stats["handler_errors"] == 1:
                    log.exception("ws: on_frame raised (further errors are counted, not logged)")
            return
        method = msg.get("method")
        if method == "pong":
            self._stats["pongs"] += 1
        elif method in ("subscribe", "unsubscribe"):
            self._on_ack(msg)

    def _on_status(self, msg: dict[str, Any]) -> None:
        data = msg.get("data")
        item = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
        system = item.get("system")
        if not isinstance(system, str):
            return
        self._slow_reconnect = system in SLOW_RECONNECT_STATES
        if system != self._system:
            self._system = system
            self._event("status", system)

    def _on_ack(self, msg: dict[str, Any]) -> None:
        result = msg.get("result") if isinstance(msg.get("result"), dict) else {}
        symbol = result.get("symbol", msg.get("symbol"))
        error = None if msg.get("success") else str(msg.get("error") or "rejected")
        request = self._requests.get(msg.get("req_id"))  # type: ignore[arg-type]
        if request is None and isinstance(symbol, str):
            request = next((r for r in self._requests.values()
                            if symbol in r.symbols and symbol not in r.outcome), None)
        if request is not None:
            request.ack(symbol if isinstance(symbol, str) else None, error)

    def _fail_requests(self) -> None:
        for request in self._requests.values():
            if not request.future.done():
                request.future.set_exception(ConnectionError("connection lost"))
                request.future.exception()  # retrieved: no "never retrieved" warning
        self._requests.clear()

    # ------------------------------------------------------------------ requests
    async def _request(self, method: str, channel: str, symbols: tuple[str, ...],
                       params: dict[str, Any]) -> SubscribeResult:
        accepted: list[str] = []
        rejected: dict[str, str] = {}
        pending: list[str] = []
        batches = [symbols[i:i + self.batch_size]
                   for i in range(0, len(symbols), self.batch_size)] or [()]
        for batch in batches:
            todo = batch
            for retry in range(self.msg_rate_retries + 1):
                outcome = await self._send_batch(method, channel, todo, params)
                if outcome is None:  # connection lost: resent after the reconnect
                    pending.extend(todo)
                    break
                if "" in outcome:  # instrument: no symbols, one ack for the channel
                    error = outcome.pop("")
                    if error is not None:
                        outcome[channel] = error
                limited = tuple(s for s, err in outcome.items()
                                if err is not None and MSG_RATE_ERROR in err)
                for sym, err in outcome.items():
                    if err is None:
                        accepted.append(sym)
                    elif sym not in limited or retry == self.msg_rate_retries:
                        rejected[sym] = err
                if not limited or retry == self.msg_rate_retries:
                    break
                wait = self.msg_rate_backoff * 2 ** retry
                log.warning("ws: %s %s: %s, retrying %d symbol(s) in %.1f s", method, channel,
                            MSG_RATE_ERROR, len(limited), wait)
                await self._sleep(wait)
                todo = limited if todo else ()
        return SubscribeResult(channel, tuple(accepted), rejected, tuple(pending))

    async def _send_batch(self, method: str, channel: str, symbols: tuple[str, ...],
                          params: dict[str, Any]) -> dict[str, str | None] | None:
        """Send one request and wait for its acks: symbol -> error (None = accepted); the
        instrument channel (no symbols) reports under ``""``. None if the connection is lost."""
        async with self._send_lock:
            if self.request_interval > 0 and self._last_request_at is not None:
                wait = self._last_request_at + self.request_interval - self._clock()
                if wait > 0:
                    await self._sleep(wait)
            self._last_request_at = self._clock()
        ws = self._ws
        if ws is None:
            return None
        req_id = next(self._req_ids)
        body: dict[str, Any] = {"channel": channel, **params}
        if symbols:
            body["symbol"] = list(symbols)
        request = _Request(symbols, asyncio.get_running_loop().create_future())
        self._requests[req_id] = request
        try:
            await ws.send(_encoder.encode(
                {"method": method, "params": body, "req_id": req_id}).decode())
            await asyncio.wait_for(asyncio.shield(request.future), self.ack_timeout)
        except (ConnectionClosed, ConnectionError):
            return None
        except TimeoutError:
            missing = [s for s in symbols if s not in request.outcome]
            log.warning("ws: %s %s: no acknowledgement within %g s for %d symbol(s)",
                        method, channel, self.ack_timeout, len(missing) or 1)
            outcome = dict(request.outcome)
            text = f"no acknowledgement within {self.ack_timeout:g} s"
            outcome.update(dict.fromkeys(missing, text))
            if not symbols:
                outcome[""] = None if request.no_symbol_ack else text
            return outcome
        finally:
            self._requests.pop(req_id, None)
        if not symbols:
            return {"": None if request.no_symbol_ack else "rejected"}
        return dict(request.outcome)

    async def _resubscribe_all(self) -> None:
        everything: list[str] = []
        for key, group in list(self._groups.items()):
            params = {**group.params, **RESUBSCRIBE_OVERRIDES.get(group.channel, {})}
            symbols = tuple(group.symbols)
            if not symbols and group.channel != "instrument":
                continue
            result = await self._request("subscribe", group.channel, symbols, params)
            if result.pending:
                return  # the connection dropped again: the next one resubscribes
            for sym in result.rejected:
                group.symbols.pop(sym, None)
            if group.channel == "instrument" and result.rejected:
                self._groups.pop(key, None)
            self._record(result, None)
            everything.extend(result.accepted)
        self._event("resubscribed", f"{len(everything)} subscription(s)",
                    tuple(dict.fromkeys(everything)))

    # ------------------------------------------------------------------ helpers
    def _record(self, result: SubscribeResult, ok_kind: str | None) -> None:
        for sym in result.accepted:
            self._rejected.pop(sym, None)
        self._rejected.update(result.rejected)
        if ok_kind and result.accepted:
            self._event(ok_kind, result.channel, result.accepted)
        if result.rejected:
            texts = sorted(set(result.rejected.values()))
            self._event("rejected", f"{result.channel}: {'; '.join(texts)}",
                        tuple(result.rejected))

    def _require_started(self, what: str) -> None:
        if not self._started:
            raise UsageError(f"KrakenWS.{what}() called before start() or after stop()")

    def _event(self, kind: str, detail: str = "", symbols: tuple[str, ...] = (), *,
               log_it: bool = True) -> None:
        if log_it:
            level = logging.WARNING if kind in ("disconnected", "rejected") and \
                detail != "stopped" else logging.INFO
            shown = f" ({len(symbols)} symbol(s))" if symbols else ""
            log.log(level, "ws %s: %s%s", kind, detail, shown)
        if self._on_event is not None:
            try:
                self._on_event(WSEvent(kind, detail, symbols))
            except Exception:
                log.exception("ws: on_event raised for %s", kind)
