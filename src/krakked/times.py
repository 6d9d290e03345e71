"""Reading times the way every krakked entry point accepts them: one parser, one error."""

from __future__ import annotations

from datetime import UTC, datetime

from krakked.errors import UsageError

__all__ = ["parse_utc"]


def parse_utc(value: datetime | int | float | str | None, name: str) -> datetime | None:
    """``value`` as an aware UTC datetime (None stays None): a datetime (naive = UTC), Unix
    seconds, or an ISO 8601 string (``Z`` accepted; no offset = UTC). Anything else is a
    ``UsageError`` naming ``name`` (the argument or flag it came from)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"{name}: {value!r} is not an ISO date/time") from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise UsageError(f"{name}: cannot read {value!r} as a time")
