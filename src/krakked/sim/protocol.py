"""What the simulator's core and its endpoint handlers share: Kraken's two error envelopes, the
request and response as the core sees them, and the view of the simulator a handler gets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

import httpx

if TYPE_CHECKING:
    from krakked.sim.config import SimConfig
    from krakked.sim.market import SimMarket

__all__ = ["FuturesError", "SimContext", "SimRequest", "SimResponse", "SpotError",
           "html_response", "json_response"]


class SpotError(Exception):
    """Answer a Spot call with Kraken's ``{"error": [...]}`` envelope (HTTP 200)."""

    def __init__(self, *errors: str) -> None:
        super().__init__(", ".join(errors))
        self.errors = list(errors)


class FuturesError(Exception):
    """Answer a Futures call with ``{"result": "error", "error": ...}`` (or a history error)."""

    def __init__(self, error: str, status: int = 200) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


@dataclass
class SimRequest:
    """One HTTP request as the simulator reads it (header names lower-case)."""

    method: str
    path: str
    raw_query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    client: str = "127.0.0.1"

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.raw_query, keep_blank_values=True))

    @classmethod
    def from_httpx(cls, request: httpx.Request) -> SimRequest:
        """The same request, read from an httpx request (its body read in full)."""
        return cls(
            method=request.method,
            path=request.url.path,
            raw_query=request.url.query.decode(),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=request.read(),
        )


@dataclass
class SimResponse:
    """One HTTP answer; ``stall`` makes the door never answer in time (a "timeout" fault)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    stall: bool = False  # a "timeout" fault: never answer in time


def json_response(data: Any, status: int = 200) -> SimResponse:
    """``data`` as compact JSON with ``status``."""
    return SimResponse(status, json.dumps(data, separators=(",", ":"), default=str).encode())


def html_response(status: int) -> SimResponse:
    """A Cloudflare-style HTML error page with ``status``."""
    body = f"<html><body><h1>{status}</h1>cloudflare</body></html>".encode()
    return SimResponse(status, body, {"content-type": "text/html"})


class SimContext(Protocol):
    """What an endpoint handler may use of the simulator: its settings, market and clock."""

    @property
    def config(self) -> SimConfig: ...

    @property
    def market(self) -> SimMarket: ...

    def now(self) -> float:
        """The simulator's wall clock (Unix seconds)."""
        ...
