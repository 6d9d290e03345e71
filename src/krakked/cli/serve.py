"""``krakked serve``: the long-running service — the 15-minute ingestion scheduler and the HTTP
API with its status page, logging to stdout-side stderr; SIGTERM or Ctrl-C stops it."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from krakked.cli import common
from krakked.cli.common import StoreOpt
from krakked.config import Settings
from krakked.logs import install_logging, redact, register_secret
from krakked.service.app import TOKEN_ENV, check_bind, create_app

__all__ = ["build_service", "run_server", "serve"]


class JsonFormatter(logging.Formatter):
    """One JSON object per record: UTC ``ts``, ``level``, ``logger``, ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
               "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out))


def _log_setup(log_json: bool) -> None:
    """INFO logs of krakked (and uvicorn) on stderr through the redaction filter, UTC times,
    key=value-ish text or one JSON object a line."""
    handler = install_logging(logging.INFO)
    if log_json:
        handler.setFormatter(JsonFormatter())
    else:
        text = logging.Formatter("ts=%(asctime)sZ level=%(levelname)s logger=%(name)s "
                                 "msg=%(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
        text.converter = time.gmtime
        handler.setFormatter(text)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def build_service(settings: Settings, store: str | None) -> tuple[Any, Any, Any]:
    """The Market on the chosen store, the ingestor and its scheduler, as configured."""
    from krakked.service.scheduler import IngestScheduler
    from krakked.sync.ingest import Ingestor

    market = common.open_market(store)
    ingestor = Ingestor(market.client, market.store, market.resolve,
                        runlog_path=settings.paths.data_dir / "service" / "ingest_runs.jsonl")
    return market, ingestor, IngestScheduler(ingestor, universe_refresh=market.refresh)


def run_server(app: Any, host: str, port: int, log_json: bool) -> None:
    """Serve ``app`` with uvicorn until SIGTERM or SIGINT (the app's lifespan then stops the
    scheduler, waiting for the running batch)."""
    import uvicorn

    _log_setup(log_json)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            lifespan="on")
    uvicorn.Server(config).run()


@common.app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs "
                                           f"a bearer token in {TOKEN_ENV}.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log one JSON object a line."
                                           )] = False,
    store: StoreOpt = None,
) -> None:
    """Run the service: ingestion every 15 minutes (:00 :15 :30 :45 UTC), the HTTP API and the
    status page at /. SIGTERM or Ctrl-C stops it after the running batch."""
    token = os.environ.get(TOKEN_ENV) or None
    register_secret(token)  # never in a log line or an error
    check_bind(host, token)
    settings = common.current_settings()
    market, ingestor, scheduler = build_service(settings, store)
    app = create_app(market, ingestor, scheduler, token=token)
    shown = f"[{host}]" if ":" in host else host
    guard = f"mutating routes need the bearer token from {TOKEN_ENV}" if token else \
        "no token: mutating routes are open to this host"
    typer.echo(f"krakked serve: http://{shown}:{port} ({guard})")
    try:
        run_server(app, host, port, log_json)
    finally:
        market.close()
