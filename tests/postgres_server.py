"""A throwaway PostgreSQL cluster for the test session, and fresh databases in it.

``throwaway_cluster()`` runs a private server from the installed PostgreSQL binaries (initdb +
pg_ctl, listening on a unix socket in a temporary directory only) and removes it afterwards;
``KRAKKED_TEST_PG_URL`` points the tests at an existing server instead. There is no skipping:
without binaries and without that variable the PostgreSQL tests fail with instructions.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["ENV_URL", "find_binaries", "fresh_database", "throwaway_cluster"]

ENV_URL = "KRAKKED_TEST_PG_URL"
"""Use this server (a ``postgresql://`` URL allowed to CREATE DATABASE) instead of starting one."""

_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found in /usr/lib/postgresql/*/bin or "
    "on PATH. Install them (Debian/Ubuntu: `sudo apt-get install -y postgresql-15`; .ci/run does "
    "this) "
    f"or set {ENV_URL} to a server the tests may create databases on."
)

_created: dict[str, list[str]] = {}  # base URL -> databases fresh_database made (external servers)


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.parent.name
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def find_binaries() -> tuple[Path, Path]:
    """``(initdb, pg_ctl)`` of the newest installed PostgreSQL, or ``RuntimeError`` saying how to
    install it."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if candidates:
        bindir = Path(candidates[-1]).parent
        if (bindir / "pg_ctl").exists():
            return bindir / "initdb", bindir / "pg_ctl"
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(initdb), Path(pg_ctl)
    raise RuntimeError(_INSTALL_HINT)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> dict[str, Any]:
    """subprocess arguments that drop root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root and no 'postgres' (or 'nobody') user to run PostgreSQL as")


def _run(cmd: list[str], drop: dict[str, Any], what: str, log: Path | None = None) -> None:
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,  # noqa: S603
                          timeout=120, cwd="/", **drop)
    if done.returncode != 0:
        tail = ""
        if log is not None and log.exists():
            tail = "\n--- server log ---\n" + "\n".join(log.read_text(errors="replace")
                                                       .splitlines()[-30:])
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr.strip()}"
                           f"{done.stdout.strip()}{tail}")


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Start a private PostgreSQL cluster (unix socket only, trust auth, user ``postgres``) and
    yield its base URL; stop it and delete its files afterwards, also on failure.

    With ``KRAKKED_TEST_PG_URL`` set, yield that URL instead (databases made by
    ``fresh_database`` are dropped at the end)."""
    external = os.environ.get(ENV_URL)
    if external:
        try:
            yield external
        finally:
            _drop_created(external)
        return

    initdb, pg_ctl = find_binaries()
    drop = _run_as()
    root = Path(tempfile.mkdtemp(prefix="krakked-pg-"))
    if len(str(root)) > 80:  # the socket path must fit in sun_path (~107 bytes)
        root.rmdir()
        root = Path(tempfile.mkdtemp(prefix="krakked-pg-", dir="/tmp"))
    data, log = root / "data", root / "server.log"
    with _terminate_as_exit():
        try:
            yield from _cluster(initdb, pg_ctl, drop, root, data, log)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _cluster(initdb: Path, pg_ctl: Path, drop: dict[str, Any], root: Path, data: Path,
             log: Path) -> Iterator[str]:
    started = False
    try:
        if drop:
            os.chown(root, drop["user"], drop["group"])
        root.chmod(0o700)
        _run([str(initdb), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
              "--locale=C", "--no-sync"], drop, "initdb")
        port = _free_port()
        options = (f"-k {root} -c listen_addresses='' -p {port} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        started = True  # from here on, always try to stop it
        _run([str(pg_ctl), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options,
              "start"], drop, "pg_ctl start", log)
        yield f"postgresql://postgres@/postgres?host={root}&port={port}"
    finally:
        if started:
            with contextlib.suppress(Exception):
                _run([str(pg_ctl), "-D", str(data), "-m", "immediate", "-w", "stop"], drop,
                     "pg_ctl stop")


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """While the cluster runs, SIGTERM (a CI timeout) interrupts like Ctrl-C: pytest stops and
    tears its fixtures down, so the server is stopped instead of orphaned."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def fresh_database(base_url: str) -> str:
    """Create a uniquely named, empty database on ``base_url``'s server; return its URL."""
    import psycopg
    from psycopg import sql

    name = f"krakked_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    _created.setdefault(base_url, []).append(name)
    return _with_database(base_url, name)


def _drop_created(base_url: str) -> None:
    import psycopg
    from psycopg import sql

    names = _created.pop(base_url, [])
    if not names:
        return
    with contextlib.suppress(psycopg.Error), psycopg.connect(base_url, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))
