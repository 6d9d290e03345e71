"""Where krakked keeps its files, and the settings read from ``config.toml`` (with defaults).

Paths come from platformdirs (``~/.config/krakked`` and ``~/.local/share/krakked`` on Linux, the
macOS and Windows equivalents); ``KRAKKED_HOME=DIR`` moves all of them under ``DIR/config`` and
``DIR/data``. Settings are read-only values: every key has a default, documented in the README.
An existing ``config.yaml`` of the original market-data module is read when no ``config.toml``
exists.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from krakked.errors import ConfigError

__all__ = [
    "DEFAULT_FUTURES_URL",
    "DEFAULT_SPOT_URL",
    "DEFAULT_WS_URL",
    "TIERS",
    "KrakenSettings",
    "LimitSettings",
    "OhlcStoreSettings",
    "Paths",
    "RegionProfile",
    "Settings",
    "UniverseSettings",
    "load_settings",
    "resolve_paths",
]

log = logging.getLogger("krakked.config")

APP_NAME = "krakked"
DEFAULT_SPOT_URL = "https://api.kraken.com"
DEFAULT_FUTURES_URL = "https://futures.kraken.com"
DEFAULT_WS_URL = "wss://ws.kraken.com/v2"
TIERS = ("starter", "intermediate", "pro")
NONCE_FORMATS = ("ms_counter", "ms", "us", "ns")
HISTORY_VERSIONS = ("v2", "v3")


@dataclass(frozen=True)
class Paths:
    """Every directory and file krakked reads or writes by default."""

    config_dir: Path
    data_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def legacy_config_file(self) -> Path:
        """The original module's ``config.yaml``, read only when ``config.toml`` is absent."""
        return self.config_dir / "config.yaml"

    @property
    def secrets_file(self) -> Path:
        return self.config_dir / "secrets.enc"

    @property
    def nonce_dir(self) -> Path:
        """Per-key nonce high-water marks (named by a hash of the key, never the key)."""
        return self.data_dir / "nonces"

    @property
    def default_store_path(self) -> Path:
        return self.data_dir / "krakked.duckdb"

    @property
    def default_store_url(self) -> str:
        return f"duckdb:///{self.default_store_path}"

    @property
    def dlt_pipelines_dir(self) -> Path:
        return self.data_dir / "dlt"

    @property
    def ohlc_root_dir(self) -> Path:
        return self.data_dir / "ohlc"


def resolve_paths(env: Mapping[str, str] | None = None) -> Paths:
    """Return the OS paths, or ``$KRAKKED_HOME/config`` and ``$KRAKKED_HOME/data`` when set."""
    env = os.environ if env is None else env
    home = env.get("KRAKKED_HOME")
    if home:
        root = Path(home).expanduser()
        return Paths(config_dir=root / "config", data_dir=root / "data")
    return Paths(
        config_dir=Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
        data_dir=Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
    )


@dataclass(frozen=True)
class RegionProfile:
    """The account's region and what it may trade; read-only. Defaults: US_CA, spot only, USD."""

    code: str = "US_CA"
    supports_margin: bool = False
    supports_futures: bool = False
    supports_staking: bool = False
    default_quote: str = "USD"


@dataclass(frozen=True)
class UniverseSettings:
    """Overrides for the USD spot universe (``[universe]``).

    ``exclude_leveraged_pairs``: drop every pair that offers leverage (``leverage_buy`` /
    ``leverage_sell``) from the base set, whatever the region. Off by default: on Kraken a spot
    pair that also offers margin carries leverage (``XBTUSD``, ``ETHUSD``), and it is still a
    spot pair.
    """

    include_pairs: tuple[str, ...] = ()
    exclude_pairs: tuple[str, ...] = ()
    min_24h_volume_usd: float | None = None
    exclude_leveraged_pairs: bool = False


@dataclass(frozen=True)
class OhlcStoreSettings:
    """The original module's file store keys (``[market_data.ohlc_store]``)."""

    backend: str | None = None  # "parquet" | "csv" | None (use store.url)
    root_dir: Path | None = None


@dataclass(frozen=True)
class LimitSettings:
    """Rate-limit model parameters (``[limits]``)."""

    tier: str = "starter"
    public_rate_per_second: float = 1.0
    public_burst: int = 5
    spot_costs: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class KrakenSettings:
    """Where Kraken is and how to talk to it (``[kraken]``, env overrides win)."""

    spot_url: str = DEFAULT_SPOT_URL
    futures_url: str = DEFAULT_FUTURES_URL
    ws_url: str = DEFAULT_WS_URL
    futures_history_version: str = "v3"
    nonce_format: str = "ms_counter"
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with the file it came from (``None`` = all defaults)."""

    paths: Paths
    source_file: Path | None = None
    region: RegionProfile = field(default_factory=RegionProfile)
    universe: UniverseSettings = field(default_factory=UniverseSettings)
    stale_tolerance_seconds: float = 60.0
    ohlc_store: OhlcStoreSettings = field(default_factory=OhlcStoreSettings)
    store_url: str | None = None
    store_url_source: str = "default"
    limits: LimitSettings = field(default_factory=LimitSettings)
    kraken: KrakenSettings = field(default_factory=KrakenSettings)

    @property
    def tier(self) -> str:
        return self.limits.tier

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (no secrets live in settings)."""
        return {
            "config_file": str(self.source_file) if self.source_file else None,
            "config_dir": str(self.paths.config_dir),
            "data_dir": str(self.paths.data_dir),
            "region": {
                "code": self.region.code,
                "default_quote": self.region.default_quote,
                "capabilities": {
                    "supports_margin": self.region.supports_margin,
                    "supports_futures": self.region.supports_futures,
                    "supports_staking": self.region.supports_staking,
                },
            },
            "universe": {
                "include_pairs": list(self.universe.include_pairs),
                "exclude_pairs": list(self.universe.exclude_pairs),
                "min_24h_volume_usd": self.universe.min_24h_volume_usd,
                "exclude_leveraged_pairs": self.universe.exclude_leveraged_pairs,
            },
            "market_data": {
                "ws": {"stale_tolerance_seconds": self.stale_tolerance_seconds},
                "ohlc_store": {
                    "backend": self.ohlc_store.backend,
                    "root_dir": str(self.ohlc_store.root_dir) if self.ohlc_store.root_dir else None,
                },
            },
            "store": {"url": self.store_url, "url_source": self.store_url_source},
            "limits": {
                "tier": self.limits.tier,
                "public_rate_per_second": self.limits.public_rate_per_second,
                "public_burst": self.limits.public_burst,
                "spot_costs": dict(self.limits.spot_costs),
            },
            "kraken": {
                "spot_url": self.kraken.spot_url,
                "futures_url": self.kraken.futures_url,
                "ws_url": self.kraken.ws_url,
                "futures_history_version": self.kraken.futures_history_version,
                "nonce_format": self.kraken.nonce_format,
                "timeout_seconds": self.kraken.timeout_seconds,
            },
        }


# --- reading ---------------------------------------------------------------------------------

_KNOWN_KEYS: dict[str, set[str]] = {
    "": {"region", "universe", "market_data", "store", "limits", "kraken"},
    "region": {"code", "default_quote", "capabilities"},
    "region.capabilities": {"supports_margin", "supports_futures", "supports_staking"},
    "universe": {"include_pairs", "exclude_pairs", "min_24h_volume_usd",
                 "exclude_leveraged_pairs"},
    "market_data": {"ws", "ohlc_store"},
    "market_data.ws": {"stale_tolerance_seconds"},
    "market_data.ohlc_store": {"backend", "root_dir"},
    "store": {"url", "retention"},
    "limits": {"tier", "public_rate_per_second", "public_burst", "spot_costs"},
    "kraken": {
        "spot_url",
        "futures_url",
        "ws_url",
        "futures_history_version",
        "nonce_format",
        "timeout_seconds",
    },
}


class _Reader:
    """Typed access to a parsed config mapping; every error names the file and the key."""

    def __init__(self, data: Mapping[str, Any], source: Path) -> None:
        self.data = data
        self.source = source

    def section(self, dotted: str) -> Mapping[str, Any]:
        node: Any = self.data
        for part in dotted.split("."):
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
            if node is None:
                node = {}
            if not isinstance(node, Mapping):
                raise ConfigError(f"{self.source}: [{dotted}] must be a table")
        return node

    def get(self, dotted: str, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.section(dotted).get(key, default)
        if value is default or value is None:
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML ints are acceptable where floats are expected; bools are never numbers here.
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, bool) and bool not in kinds:
            value = _bad(self.source, dotted, key, value, kinds)
        if not isinstance(value, kinds):
            _bad(self.source, dotted, key, value, kinds)
        return value

    def choice(self, dotted: str, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(dotted, key, str, default)
        if value not in choices:
            raise ConfigError(
                f"{self.source}: {dotted}.{key} = {value!r} is not one of {', '.join(choices)}"
            )
        return value

    def str_list(self, dotted: str, key: str) -> tuple[str, ...]:
        value = self.get(dotted, key, list, [])
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.source}: {dotted}.{key} must be a list of strings")
        return tuple(dict.fromkeys(value))

    def warn_unknown(self) -> None:
        for dotted, known in _KNOWN_KEYS.items():
            section = self.data if not dotted else self.section(dotted)
            for key in section:
                if key not in known:
                    name = f"{dotted}.{key}" if dotted else key
                    log.warning("%s: unknown config key %r ignored", self.source, name)


def _bad(source: Path, dotted: str, key: str, value: Any, kinds: tuple[type, ...]) -> Any:
    names = " or ".join(k.__name__ for k in kinds)
    raise ConfigError(
        f"{source}: {dotted}.{key} must be {names}, got {type(value).__name__} {value!r}"
    )


def _read_file(path: Path) -> Mapping[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    if path.suffix == ".toml":
        try:
            return tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    import yaml  # only for the original module's config.yaml

    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def _url(value: str, name: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://", "ws://", "wss://")):
        raise ConfigError(f"{name}: {value!r} is not an http(s) or ws(s) URL")
    return value


def load_settings(
    env: Mapping[str, str] | None = None, *, config_file: Path | None = None
) -> Settings:
    """Read ``config.toml`` (or the legacy ``config.yaml``) and the environment into ``Settings``.

    A missing file means all defaults. Environment variables win over the file:
    ``KRAKKED_SPOT_URL``, ``KRAKKED_FUTURES_URL``, ``KRAKKED_WS_URL``, ``KRAKKED_TIER``,
    ``KRAKKED_STORE``, ``KRAKKED_CONFIG`` (another config file), and last ``DATABASE_URL``.
    """
    env = os.environ if env is None else env
    paths = resolve_paths(env)
    if config_file is None and env.get("KRAKKED_CONFIG"):
        config_file = Path(env["KRAKKED_CONFIG"]).expanduser()
        if not config_file.exists():
            raise ConfigError(f"KRAKKED_CONFIG: {config_file} does not exist")
    source: Path | None = None
    data: Mapping[str, Any] = {}
    if config_file is not None:
        source, data = config_file, _read_file(config_file)
    elif paths.config_file.exists():
        source, data = paths.config_file, _read_file(paths.config_file)
    elif paths.legacy_config_file.exists():
        source, data = paths.legacy_config_file, _read_file(paths.legacy_config_file)

    r = _Reader(data, source or paths.config_file)
    r.warn_unknown()

    region = RegionProfile(
        code=r.get("region", "code", str, "US_CA"),
        supports_margin=r.get("region.capabilities", "supports_margin", bool, False),
        supports_futures=r.get("region.capabilities", "supports_futures", bool, False),
        supports_staking=r.get("region.capabilities", "supports_staking", bool, False),
        default_quote=r.get("region", "default_quote", str, "USD"),
    )
    min_vol = r.get("universe", "min_24h_volume_usd", float, None)
    if min_vol is not None and min_vol < 0:
        raise ConfigError(f"{r.source}: universe.min_24h_volume_usd must be >= 0")
    universe = UniverseSettings(
        include_pairs=r.str_list("universe", "include_pairs"),
        exclude_pairs=r.str_list("universe", "exclude_pairs"),
        min_24h_volume_usd=min_vol or None,
        exclude_leveraged_pairs=r.get("universe", "exclude_leveraged_pairs", bool, False),
    )
    stale = r.get("market_data.ws", "stale_tolerance_seconds", float, 60.0)
    if stale <= 0:
        raise ConfigError(f"{r.source}: market_data.ws.stale_tolerance_seconds must be > 0")
    backend = r.get("market_data.ohlc_store", "backend", str, None)
    if backend is not None and backend not in ("parquet", "csv"):
        raise ConfigError(
            f"{r.source}: market_data.ohlc_store.backend = {backend!r} is not parquet or csv"
        )
    root_dir = r.get("market_data.ohlc_store", "root_dir", str, None)
    ohlc_store = OhlcStoreSettings(
        backend=backend, root_dir=Path(root_dir).expanduser() if root_dir else None
    )

    costs = r.get("limits", "spot_costs", Mapping, {})
    for name, cost in costs.items():
        if not isinstance(cost, int) or isinstance(cost, bool) or cost < 0:
            raise ConfigError(f"{r.source}: limits.spot_costs.{name} must be an integer >= 0")
    tier = env.get("KRAKKED_TIER") or r.choice("limits", "tier", TIERS, "starter")
    if tier not in TIERS:
        raise ConfigError(f"KRAKKED_TIER: {tier!r} is not one of {', '.join(TIERS)}")
    rate = r.get("limits", "public_rate_per_second", float, 1.0)
    burst = r.get("limits", "public_burst", int, 5)
    if rate <= 0 or burst < 1:
        raise ConfigError(f"{r.source}: limits.public_rate_per_second must be > 0, burst >= 1")
    limits = LimitSettings(
        tier=tier, public_rate_per_second=rate, public_burst=burst, spot_costs=dict(costs)
    )

    kraken = KrakenSettings(
        spot_url=_url(
            env.get("KRAKKED_SPOT_URL") or r.get("kraken", "spot_url", str, DEFAULT_SPOT_URL),
            "spot_url",
        ),
        futures_url=_url(
            env.get("KRAKKED_FUTURES_URL")
            or r.get("kraken", "futures_url", str, DEFAULT_FUTURES_URL),
            "futures_url",
        ),
        ws_url=_url(env.get("KRAKKED_WS_URL") or r.get("kraken", "ws_url", str, DEFAULT_WS_URL),
                    "ws_url"),
        futures_history_version=r.choice("kraken", "futures_history_version", HISTORY_VERSIONS,
                                         "v3"),
        nonce_format=r.choice("kraken", "nonce_format", NONCE_FORMATS, "ms_counter"),
        timeout_seconds=r.get("kraken", "timeout_seconds", float, 30.0),
    )

    store_url, store_source = _store_url(env, r, ohlc_store, paths)
    return Settings(
        paths=paths,
        source_file=source,
        region=region,
        universe=universe,
        stale_tolerance_seconds=stale,
        ohlc_store=ohlc_store,
        store_url=store_url,
        store_url_source=store_source,
        limits=limits,
        kraken=kraken,
    )


def _store_url(
    env: Mapping[str, str], r: _Reader, ohlc: OhlcStoreSettings, paths: Paths
) -> tuple[str, str]:
    """The store URL by DESIGN.md's precedence (the ``--store`` flag is applied by the caller)."""
    if env.get("KRAKKED_STORE"):
        return env["KRAKKED_STORE"], "env:KRAKKED_STORE"
    url = r.get("store", "url", str, None)
    if url:
        return url, "config:store.url"
    if ohlc.backend:
        root = ohlc.root_dir or paths.ohlc_root_dir
        return f"{ohlc.backend}:///{root}", "config:market_data.ohlc_store"
    if env.get("DATABASE_URL"):
        log.info("store: using DATABASE_URL (no --store, KRAKKED_STORE or store.url set)")
        return env["DATABASE_URL"], "env:DATABASE_URL"
    return paths.default_store_url, "default"
