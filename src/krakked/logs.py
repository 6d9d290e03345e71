"""Logging set-up and the redaction that keeps keys, secrets and passwords out of every log line.

Secret values register themselves here when loaded (``register_secret``); the filter installed by
the CLI and the service masks them in every record (keys to their first 4 characters, secrets
fully), and also masks signature headers and nonce-bearing bodies should one ever be formatted.
"""

from __future__ import annotations

import logging
import re
import sys
import threading

__all__ = ["RedactingFilter", "install_logging", "mask_key", "redact", "register_secret"]

_lock = threading.Lock()
# value -> replacement; process-wide so every handler masks what any loader has seen.
_secrets: dict[str, str] = {}

_PATTERNS = [
    (re.compile(r"(?i)(api-sign|authent|apikey|api-key)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"),
     r"\1\2REDACTED"),
    (re.compile(r"(?i)\b(nonce=)\d+"), r"\1REDACTED"),
    (re.compile(r"(?i)(master[_ ]password['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"), r"\1REDACTED"),
]


def mask_key(key: str) -> str:
    """Show an API key as its first 4 characters and an ellipsis."""
    return f"{key[:4]}…" if key else ""


def register_secret(value: str | None, *, kind: str = "secret") -> None:
    """Mask ``value`` in every log record from now on; ``kind='key'`` keeps 4 characters."""
    if not value or len(value) < 4:
        return
    replacement = mask_key(value) if kind == "key" else "REDACTED"
    with _lock:
        _secrets[value] = replacement


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and signature-like token masked."""
    with _lock:
        items = sorted(_secrets.items(), key=lambda kv: -len(kv[0]))
    for value, replacement in items:
        if value in text:
            text = text.replace(value, replacement)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's message (and traceback) through ``redact``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not leak its arguments either
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
            del exc
        return True


def install_logging(level: int = logging.INFO, *, stream=None) -> logging.Handler:
    """Route ``krakked.*`` (and dlt, httpx) logs to stderr through the redacting filter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_krakked", False):
            root.removeHandler(existing)
    handler._krakked = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    logging.getLogger("httpcore").setLevel(max(level, logging.WARNING))
    return handler
