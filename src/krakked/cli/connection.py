"""``krakked status``, ``setup``, ``config show``, ``creds show``: is Kraken reachable, do the
keys work, what settings and credentials krakked uses."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from krakked import __version__
from krakked.cli import common
from krakked.cli.common import JsonOpt
from krakked.config import Settings
from krakked.credentials import (
    PRODUCTS,
    SetupResult,
    describe_sources,
    master_password,
    setup_credentials,
)
from krakked.errors import KrakkedError
from krakked.logs import redact

# -- status ------------------------------------------------------------------------------------


@common.app.command()
def status(json_: JsonOpt = False) -> None:
    """Is Kraken (Spot and Futures REST) reachable? Are credentials present, and do they work?

    Also shows the region profile, the rate-limit tier and the store krakked would use.
    A private read-only call (Spot Balance, Futures accounts) is made for each key pair found.
    Exits 0 only when every check that applies passed; otherwise with the exit code of the
    first failed check in the order Spot REST, Futures REST, Spot credentials, Futures
    credentials (the report, --json included, is printed in full first). No keys is not a
    failure; Futures REST counts only where the region supports futures or Futures keys exist.
    """
    from krakked.kraken.health import check_futures, check_spot, status_failures

    settings = common.current_settings()
    prompt = common.PasswordPrompt(common.interactive() and not json_)
    keys, load_errors = common.load_keys(settings, prompt)
    report: dict[str, Any] = {
        "version": __version__,
        "spot": check_spot(settings, keys["spot"]),
        "futures": check_futures(settings, keys["futures"]),
        "region": settings.to_dict()["region"],
        "tier": settings.tier,
        "store": {"url": settings.store_url, "source": settings.store_url_source},
        "config_file": str(settings.source_file) if settings.source_file else None,
    }
    for product in PRODUCTS:
        if report[product]["credentials"] is None:
            problem = load_errors.get(product)
            report[product]["credentials"] = {
                "present": False,
                "problem": str(problem) if problem is not None else None,
            }
    if settings.region.supports_futures is False and keys["futures"] is not None:
        report["futures"]["warning"] = (
            f"region {settings.region.code} does not list futures support; "
            "account history still syncs because keys exist"
        )
    failures = status_failures(
        report["spot"], report["futures"], load_errors,
        futures_rest_applies=bool(settings.region.supports_futures or keys["futures"] is not None
                                  or "futures" in load_errors),
    )
    code = failures[0]["exit_code"] if failures else 0
    report.update(ok=not failures, exit_code=code, failures=failures)
    if json_:
        common.emit_json(report)
        if code:
            raise typer.Exit(code=code)
        return
    table = Table(title=f"krakked {__version__} status", show_lines=False)
    table.add_column("")
    table.add_column("Spot")
    table.add_column("Futures")
    s, f = report["spot"], report["futures"]
    table.add_row("REST", describe_reach(s), describe_reach(f))
    table.add_row("credentials", describe_credentials(s["credentials"]),
                  describe_credentials(f["credentials"]))
    common.out.print(table)
    region = settings.region
    common.out.print(
        f"region [bold]{region.code}[/] (quote {region.default_quote}; margin "
        f"{_yn(region.supports_margin)}, futures {_yn(region.supports_futures)}, staking "
        f"{_yn(region.supports_staking)}) · tier [bold]{settings.tier}[/]"
    )
    common.out.print(f"store {settings.store_url} ({settings.store_url_source})")
    common.out.print(f"config {settings.source_file or '(defaults: no config.toml)'}")
    for product in PRODUCTS:
        if report[product].get("warning"):
            common.err.print(f"[yellow]warning:[/] {report[product]['warning']}")
    for failure in failures:
        common.err.print(f"[red]failed:[/] {failure['check'].replace('.', ' ')}: "
                         f"{redact(str(failure['error']))} (exit code {failure['exit_code']})",
                         highlight=False)
    if code:
        raise typer.Exit(code=code)


def _yn(flag: bool) -> str:
    return "yes" if flag else "no"


def describe_reach(part: dict[str, Any]) -> str:
    if part["reachable"]:
        extra = f" ({part['system_status']})" if part.get("system_status") else ""
        return f"[green]reachable[/]{extra} {part['url']}"
    return f"[red]unreachable[/] {part['url']}: {part['error']}"


def describe_credentials(c: dict[str, Any]) -> str:
    if not c.get("present"):
        return f"[red]{c['problem']}[/]" if c.get("problem") else "[dim]none[/]"
    state = "[green]works[/]" if c["private_call_ok"] else (
        "[red]rejected by Kraken[/]" if c["auth_problem"] else "[yellow]not checked[/]"
    )
    text = f"{c['key']} from {c['source']}: {state}"
    if c.get("error"):
        text += f" ({c['error']})"
    return text


# -- setup -------------------------------------------------------------------------------------


@common.app.command()
def setup(
    product: Annotated[
        str | None, typer.Option(help="spot, futures or both (asked when omitted).")
    ] = None,
    save_unvalidated: Annotated[
        bool,
        typer.Option(help="If Kraken cannot be reached, save the keys marked unvalidated."),
    ] = False,
    force: Annotated[
        bool, typer.Option(help="Save even if Kraken rejects the keys (marked unvalidated).")
    ] = False,
) -> None:
    """Enter Spot and/or Futures API keys; each pair is checked with a private read-only call
    (Spot Balance, Futures accounts) and stored encrypted in the secrets file.

    Keys Kraken rejects are not saved (unless --force). If Kraken cannot be reached, that is not
    reported as a key problem: retry, or save them marked unvalidated. The master password comes
    from KRAKKED_MASTER_PASSWORD or a prompt. When a key pair is not saved, the command exits
    with its error's code (11 rejected, 12 permission, 16 unreachable, 15 unavailable; the
    first product that failed decides).
    """
    from krakked.kraken.health import key_pair_validator

    settings = common.current_settings()
    interactive = common.interactive()
    choice = product or typer.prompt("Which keys? (spot, futures, both)", default="spot")
    products = list(PRODUCTS) if choice == "both" else [choice]
    for p in products:
        if p not in PRODUCTS:
            raise typer.BadParameter(f"{p!r} is not spot, futures or both", param_hint="--product")
    password = _setup_password(settings)
    validator = key_pair_validator(settings)
    code = 0
    for p in products:
        key = typer.prompt(f"{p} API key", hide_input=True).strip()
        secret = typer.prompt(f"{p} API secret", hide_input=True).strip()
        while True:
            result = setup_credentials(
                p, key, secret, password=password, validator=validator, paths=settings.paths,
                save_unvalidated=save_unvalidated, force=force,
            )
            if result.status == "unreachable" and not result.saved and interactive:
                action = typer.prompt(
                    "Kraken could not be reached (this is not a key problem). "
                    "[r]etry, [s]ave unvalidated, [a]bort", default="r",
                )
                if action.startswith("r"):
                    continue
                if action.startswith("s"):
                    # one more try; if Kraken is still unreachable the keys are saved unvalidated
                    result = setup_credentials(
                        p, key, secret, password=password, validator=validator,
                        paths=settings.paths, save_unvalidated=True, force=force,
                    )
            break
        _report_setup(result)
        if not result.saved and not code:
            code = _setup_exit_code(result)
    if code:
        raise typer.Exit(code=code)


def _setup_exit_code(result: SetupResult) -> int:
    """The exit code of the error that kept a key pair from being saved: the auth error's
    (``AuthError`` 11, ``PermissionDeniedError`` 12) for rejected keys, the network or service
    error's (``NetworkError`` 16, ``ServiceUnavailableError`` 15, …) when Kraken was not
    reached."""
    from krakked import errors

    cls = getattr(errors, result.error_type or "", None)
    if isinstance(cls, type) and issubclass(cls, KrakkedError):
        return cls.exit_code
    return errors.AuthError.exit_code if result.auth_problem else errors.KrakenError.exit_code


def _setup_password(settings: Settings) -> str:
    def prompt() -> str:
        if settings.paths.secrets_file.exists():
            return typer.prompt("Master password of the existing secrets file", hide_input=True)
        return typer.prompt(
            "Choose a master password for the secrets file", hide_input=True,
            confirmation_prompt=True,
        )

    return master_password(prompt=prompt, interactive=True)  # setup reads its answers from stdin


def _report_setup(result: SetupResult) -> None:
    if result.status == "validated":
        common.out.print(f"[green]{result.product}: keys validated and saved[/]")
    elif result.saved:
        common.out.print(f"[yellow]{result.product}: saved UNVALIDATED[/] ({result.error})")
    elif result.status == "auth_failed":
        common.err.print(f"[red]{result.product}: Kraken rejected the keys; nothing saved[/]: "
                         f"{result.error}")
    else:
        common.err.print(f"[red]{result.product}: Kraken could not be reached (not a key problem); "
                         f"nothing saved[/]: {result.error}. Retry, or use --save-unvalidated.")


# -- config / creds ----------------------------------------------------------------------------


@common.config_app.command("show")
def config_show(json_: JsonOpt = False) -> None:
    """Print the effective settings (file values over defaults, environment over both)."""
    data = common.current_settings().to_dict()
    if json_:
        common.emit_json(data)
        return
    common.out.print_json(json.dumps(data, default=str))


@common.creds_app.command("show")
def creds_show(json_: JsonOpt = False) -> None:
    """Which key pairs krakked would use, from where, and whether they were validated.

    Keys show only their first 4 characters; secrets are never shown.
    """
    settings = common.current_settings()
    prompt = common.PasswordPrompt(common.interactive() and not json_)
    keys, problems = common.load_keys(settings, prompt)
    report: dict[str, Any] = {}
    for product in PRODUCTS:
        kp = keys[product]
        report[product] = {
            "present": kp is not None,
            "source": kp.source if kp else None,
            "key": kp.masked_key if kp else None,
            "validated": kp.validated if kp else None,
            "validated_at": kp.validated_at.isoformat() if kp and kp.validated_at else None,
            "problem": str(problems[product]) if product in problems else None,
            "sources_found": describe_sources(product, paths=settings.paths),
        }
    if json_:
        common.emit_json(report)
        return
    table = Table(title="credentials")
    for col in ("product", "key", "source", "validated", "note"):
        table.add_column(col)
    for product, r in report.items():
        validated = "-" if r["validated"] is None else (
            f"yes {r['validated_at'] or ''}" if r["validated"] else "no")
        table.add_row(product, r["key"] or "-", r["source"] or "-", validated,
                      r["problem"] or ("" if r["present"] else "not configured"))
    common.out.print(table)
