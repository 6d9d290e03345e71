"""Credentials: precedence, the encrypted secrets file, the set-up flow, and that nothing leaks."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from krakked.config import Paths
from krakked.credentials import (
    ENV_VAR_PAIRS,
    Credentials,
    KeyPair,
    Secret,
    SetupResult,
    describe_sources,
    load_credentials,
    load_key_pair,
    master_password,
    read_secrets,
    remove_credentials,
    save_secrets,
    setup_credentials,
)
from krakked.errors import (
    AuthError,
    CredentialsError,
    MalformedResponseError,
    NetworkError,
    NoCredentialsError,
    PermissionDeniedError,
    RateLimitError,
    SecretsDecryptionError,
    ServiceUnavailableError,
    UsageError,
)

FAST_N = 2**10


def _secret(label: str, size: int = 64) -> str:
    return base64.b64encode(hashlib.sha512(label.encode()).digest()[:size]).decode()


SPOT_KEY = "SpotKeyZq7Vn3Xw9Lp2Rt5Yb8Hc1Jd4Mf6Ng0KsEnv"
SPOT_SECRET = _secret("spot-env")
FUT_KEY = "FutKeyQw8Er4Ty6Ui2Op0As3Df5Gh7Jk9LzFutEnv"
FUT_SECRET = _secret("futures-env")
FILE_SPOT_KEY = "FileSpotKeyMn3Bv5Cx7Za9Sd1Fg2Hj4Kl6Qw8Er"
FILE_SPOT_SECRET = _secret("spot-file")
FILE_FUT_KEY = "FileFutKeyPo9Iu7Yt5Re3Wq1Lk2Jh4Gf6Ds8Az"
FILE_FUT_SECRET = _secret("futures-file")
PASSWORD = "correct horse battery staple Zx9"
OTHER_PASSWORD = "tr0ub4dor&3 not the password"
BAD_BASE64 = "not*base64!!ZqSecretValue%%"
SHORT_SECRET = base64.b64encode(b"ShortButDistinctive!").decode()  # 20 bytes
# Kraken's published Futures example secret: 87 characters, one "=" short.
KRAKEN_FUTURES_EXAMPLE_SECRET = (
    "rttp4AzwRfYEdQ7R7X8Z/04Y4TZPa97pqCypi3xXxAqftygftnI6H9yGV+OcUOOJeFtZkr8mVwbAndU3Kz4Q+eG"
)

SENSITIVE = (
    SPOT_KEY, SPOT_SECRET, FUT_KEY, FUT_SECRET, FILE_SPOT_KEY, FILE_SPOT_SECRET, FILE_FUT_KEY,
    FILE_FUT_SECRET, PASSWORD, OTHER_PASSWORD, BAD_BASE64, SHORT_SECRET,
    KRAKEN_FUTURES_EXAMPLE_SECRET,
)


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def texts(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Texts a test shows (reprs, exception messages); checked with every log record at the end."""
    caplog.set_level(logging.DEBUG, logger="krakked")
    shown: list[str] = []
    yield shown
    logged = [caplog.text] + [r.getMessage() for r in caplog.records]
    for text in shown + logged:
        for value in SENSITIVE:
            assert value not in text


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(config_dir=tmp_path / "home" / "config", data_dir=tmp_path / "home" / "data")


def show(texts: list[str], exc: BaseException) -> str:
    texts.extend([str(exc), repr(exc), str(exc.args)])
    return str(exc)


def write_file(paths: Paths, *, spot: bool = True, futures: bool = True) -> None:
    entries = {}
    if spot:
        entries["spot"] = KeyPair.create("spot", FILE_SPOT_KEY, FILE_SPOT_SECRET, "test")
    if futures:
        entries["futures"] = KeyPair.create("futures", FILE_FUT_KEY, FILE_FUT_SECRET, "test")
    save_secrets(paths.secrets_file, entries, PASSWORD, scrypt_n=FAST_N)


def write_dlt(cwd: Path, body: str) -> None:
    (cwd / ".dlt").mkdir(exist_ok=True)
    (cwd / ".dlt" / "secrets.toml").write_text(body)


SPOT_ENV = {"KRAKEN_API_KEY": SPOT_KEY, "KRAKEN_API_SECRET": SPOT_SECRET}


def never_prompt() -> str:
    raise AssertionError("the secrets file must not be opened")


# --- precedence ----------------------------------------------------------------------------


def test_env_pair_wins_over_secrets_file(cwd: Path, paths: Paths, texts: list[str]) -> None:
    write_file(paths)
    pair = load_key_pair("spot", env=SPOT_ENV, cwd=cwd, paths=paths, password=never_prompt)
    assert pair.api_key == SPOT_KEY
    assert pair.api_secret.reveal() == SPOT_SECRET
    assert pair.source == "env:KRAKEN_API_KEY"


def test_secrets_file_alone_is_decrypted(cwd: Path, paths: Paths, texts: list[str]) -> None:
    write_file(paths)
    env = {"KRAKKED_MASTER_PASSWORD": PASSWORD}
    pair = load_key_pair("futures", env=env, cwd=cwd, paths=paths)
    assert (pair.api_key, pair.api_secret.reveal()) == (FILE_FUT_KEY, FILE_FUT_SECRET)
    assert pair.source == "secrets.enc"


def test_password_argument_wins_over_env_and_prompt_is_asked_once(
    cwd: Path, paths: Paths, texts: list[str]
) -> None:
    write_file(paths)
    asked: list[int] = []

    def prompt() -> str:
        asked.append(1)
        return PASSWORD

    env = {"KRAKKED_MASTER_PASSWORD": OTHER_PASSWORD}
    creds = load_credentials(env=env, cwd=cwd, paths=paths, password=prompt)
    assert creds.get("spot").api_key == FILE_SPOT_KEY
    assert creds.get("futures").api_key == FILE_FUT_KEY
    assert asked == [1]


def test_env_for_one_product_and_file_for_the_other(
    cwd: Path, paths: Paths, texts: list[str]
) -> None:
    write_file(paths)
    creds = load_credentials(env=SPOT_ENV, cwd=cwd, paths=paths, password=PASSWORD)
    assert creds.get("spot").source == "env:KRAKEN_API_KEY"
    assert creds.get("futures").source == "secrets.enc"


@pytest.mark.parametrize(
    ("product", "key_var", "secret_var"),
    [(product, k, s) for product, pairs in ENV_VAR_PAIRS.items() for k, s in pairs],
)
def test_each_env_var_pair_is_used(
    cwd: Path, paths: Paths, texts: list[str], product: str, key_var: str, secret_var: str
) -> None:
    env = {key_var: FUT_KEY, secret_var: FUT_SECRET}
    pair = load_key_pair(product, env=env, cwd=cwd, paths=paths)
    assert (pair.product, pair.api_key, pair.api_secret.reveal()) == (product, FUT_KEY, FUT_SECRET)
    assert pair.source == f"env:{key_var}"


def test_the_four_env_pairs_are_the_issue_names() -> None:
    assert ENV_VAR_PAIRS == {
        "spot": (
            ("KRAKEN_API_KEY", "KRAKEN_API_SECRET"),
            ("KRAKEN_SPOT__API_KEY", "KRAKEN_SPOT__API_SECRET"),
        ),
        "futures": (
            ("KRAKEN_FUTURES__API_KEY", "KRAKEN_FUTURES__API_SECRET"),
            ("KRAKEN_API_PUBLIC_KEY", "KRAKEN_API_SECRET_KEY"),
        ),
    }


def test_first_listed_env_pair_wins_when_two_are_complete(
    cwd: Path, paths: Paths, texts: list[str]
) -> None:
    env = {
        "KRAKEN_API_PUBLIC_KEY": SPOT_KEY,
        "KRAKEN_API_SECRET_KEY": SPOT_SECRET,
        "KRAKEN_FUTURES__API_KEY": FUT_KEY,
        "KRAKEN_FUTURES__API_SECRET": FUT_SECRET,
    }
    pair = load_key_pair("futures", env=env, cwd=cwd, paths=paths)
    assert pair.api_key == FUT_KEY


@pytest.mark.parametrize(
    ("present", "missing"),
    [(k, s) for pairs in ENV_VAR_PAIRS.values() for k, s in pairs]
    + [(s, k) for pairs in ENV_VAR_PAIRS.values() for k, s in pairs],
)
def test_one_half_of_env_pair_is_ignored_with_warning_naming_missing_variable(
    cwd: Path,
    paths: Paths,
    texts: list[str],
    caplog: pytest.LogCaptureFixture,
    present: str,
    missing: str,
) -> None:
    value = SPOT_KEY if "SECRET" not in present else SPOT_SECRET
    creds = load_credentials(env={present: value}, cwd=cwd, paths=paths)
    assert creds == Credentials(spot=None, futures=None)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert missing in warnings[0]
    assert value not in warnings[0]


def test_half_env_pair_does_not_hide_a_complete_one(
    cwd: Path, paths: Paths, texts: list[str]
) -> None:
    env = {**SPOT_ENV, "KRAKEN_SPOT__API_KEY": FUT_KEY}
    assert load_key_pair("spot", env=env, cwd=cwd, paths=paths).api_key == SPOT_KEY


def test_dotenv_file_is_loaded_without_touching_os_environ(
    cwd: Path, paths: Paths, texts: list[str]
) -> None:
    (cwd / ".env").write_text(f"KRAKEN_API_KEY={SPOT_KEY}\nKRAKEN_API_SECRET='{SPOT_SECRET}'\n")
    pair = load_key_pair("spot", env={}, cwd=cwd, paths=paths)
    assert (pair.api_key, pair.api_secret.reveal()) == (SPOT_KEY, SPOT_SECRET)
    assert pair.source == ".env:KRAKEN_API_KEY"
    assert "KRAKEN_API_KEY" not in os.environ or os.environ["KRAKEN_API_KEY"] != SPOT_KEY


def test_real_env_wins_over_dotenv(cwd: Path, paths: Paths, texts: list[str]) -> None:
    (cwd / ".env").write_text(f"KRAKEN_API_KEY={FILE_SPOT_KEY}\nKRAKEN_API_SECRET={SPOT_SECRET}\n")
    pair = load_key_pair("spot", env={"KRAKEN_API_KEY": SPOT_KEY}, cwd=cwd, paths=paths)
    assert pair.api_key == SPOT_KEY
    assert pair.source == "env:KRAKEN_API_KEY"


def test_dotenv_can_hold_the_master_password(cwd: Path, paths: Paths, texts: list[str]) -> None:
    write_file(paths)
    (cwd / ".env").write_text(f"KRAKKED_MASTER_PASSWORD='{PASSWORD}'\n")
    assert load_key_pair("spot", env={}, cwd=cwd, paths=paths).api_key == FILE_SPOT_KEY


def test_dlt_secrets_toml_is_used_when_env_has_nothing(
    cwd: Path, paths: Paths, texts: list[str]
) -> None:
    write_file(paths)
    write_dlt(
        cwd,
        f'[kraken_futures]\napi_key = "{FUT_KEY}"\napi_secret = "{FUT_SECRET}"\n'
        f'[kraken_spot]\napi_key = "{SPOT_KEY}"\napi_secret = "{SPOT_SECRET}"\n',
    )
    creds = load_credentials(env={}, cwd=cwd, paths=paths, password=never_prompt)
    assert creds.get("futures").api_key == FUT_KEY
    assert creds.get("spot").api_secret.reveal() == SPOT_SECRET
    assert creds.get("spot").source == ".dlt/secrets.toml"


def test_env_wins_over_dlt_secrets_toml(cwd: Path, paths: Paths, texts: list[str]) -> None:
    write_dlt(cwd, f'[kraken_spot]\napi_key = "{FILE_SPOT_KEY}"\napi_secret = "{SPOT_SECRET}"\n')
    assert load_key_pair("spot", env=SPOT_ENV, cwd=cwd, paths=paths).api_key == SPOT_KEY


def test_half_dlt_section_is_ignored_with_warning(
    cwd: Path, paths: Paths, texts: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    write_dlt(cwd, f'[kraken_spot]\napi_key = "{SPOT_KEY}"\n')
    with pytest.raises(NoCredentialsError) as info:
        load_key_pair("spot", env={}, cwd=cwd, paths=paths)
    show(texts, info.value)
    assert any("api_secret" in r.getMessage() for r in caplog.records)


def test_invalid_dlt_toml_is_reported_without_its_content(
    cwd: Path, paths: Paths, texts: list[str]
) -> None:
    write_dlt(cwd, f'[kraken_spot]\napi_key = "{SPOT_KEY}\n{SPOT_SECRET}')
    with pytest.raises(CredentialsError, match="not valid TOML") as info:
        load_key_pair("spot", env={}, cwd=cwd, paths=paths)
    show(texts, info.value)


# --- the secrets file ----------------------------------------------------------------------


def test_round_trip_keeps_every_field(paths: Paths, texts: list[str]) -> None:
    stamp = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    entries = {
        "spot": KeyPair.create(
            "spot", SPOT_KEY, SPOT_SECRET, "test", validated=True, validated_at=stamp
        ),
        "futures": KeyPair.create("futures", FUT_KEY, FUT_SECRET, "test"),
    }
    save_secrets(paths.secrets_file, entries, PASSWORD, scrypt_n=FAST_N)
    back = read_secrets(paths.secrets_file, PASSWORD)
    assert back == {product: _with_source(pair, "secrets.enc") for product, pair in entries.items()}
    assert back["spot"].validated and back["spot"].validated_at == stamp
    assert not back["futures"].validated and back["futures"].validated_at is None


def _with_source(pair: KeyPair, source: str) -> KeyPair:
    return KeyPair(
        pair.product, pair.api_key, pair.api_secret, source, pair.validated, pair.validated_at
    )


def test_secrets_file_never_holds_plaintext(paths: Paths) -> None:
    write_file(paths)
    blob = paths.secrets_file.read_bytes()
    assert blob.startswith(b"KRKD\x01")
    for value in (FILE_SPOT_KEY, FILE_SPOT_SECRET, FILE_FUT_KEY, FILE_FUT_SECRET, PASSWORD):
        assert value.encode() not in blob


def test_wrong_password_raises_exact_message(paths: Paths, texts: list[str]) -> None:
    write_file(paths)
    with pytest.raises(SecretsDecryptionError) as info:
        read_secrets(paths.secrets_file, OTHER_PASSWORD)
    assert show(texts, info.value) == "Wrong password or corrupted secrets file"


def test_wrong_master_password_in_env_fails_loading(
    cwd: Path, paths: Paths, texts: list[str]
) -> None:
    write_file(paths)
    env = {"KRAKKED_MASTER_PASSWORD": OTHER_PASSWORD}
    with pytest.raises(SecretsDecryptionError, match=r"^Wrong password or corrupted") as info:
        load_credentials(env=env, cwd=cwd, paths=paths)
    show(texts, info.value)


def _flip(index: int) -> Callable[[bytes], bytes]:
    def damage(blob: bytes) -> bytes:
        return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]

    return damage


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(_flip(-1), id="last-ciphertext-byte"),
        pytest.param(_flip(40), id="first-ciphertext-byte"),
        pytest.param(_flip(0), id="magic"),
        pytest.param(_flip(4), id="version"),
        pytest.param(_flip(6), id="scrypt-r"),
        pytest.param(_flip(10), id="salt"),
        pytest.param(_flip(30), id="nonce"),
        pytest.param(lambda b: b[:-1], id="truncated-by-one"),
        pytest.param(lambda b: b[:36], id="truncated-to-header"),
        pytest.param(lambda b: b[:3], id="truncated-inside-magic"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b + b"\x00", id="extended"),
    ],
)
def test_corrupted_file_raises_same_error(
    paths: Paths, texts: list[str], damage: Callable[[bytes], bytes]
) -> None:
    write_file(paths)
    path = paths.secrets_file
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SecretsDecryptionError) as info:
        read_secrets(path, PASSWORD)
    assert show(texts, info.value) == "Wrong password or corrupted secrets file"


def test_file_is_0600_in_a_0700_directory_and_no_temp_file_remains(paths: Paths) -> None:
    write_file(paths)
    write_file(paths, futures=False)  # a rewrite replaces the file
    assert stat.S_IMODE(paths.secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.config_dir.stat().st_mode) == 0o700
    assert [p.name for p in paths.config_dir.iterdir()] == ["secrets.enc"]
    assert set(read_secrets(paths.secrets_file, PASSWORD)) == {"spot"}


def test_existing_wider_config_dir_is_tightened_to_0700(paths: Paths) -> None:
    paths.config_dir.mkdir(parents=True)
    paths.config_dir.chmod(0o755)
    write_file(paths)
    assert stat.S_IMODE(paths.config_dir.stat().st_mode) == 0o700


def test_empty_master_password_is_refused(cwd: Path, paths: Paths, texts: list[str]) -> None:
    with pytest.raises(CredentialsError, match="must not be empty"):
        save_secrets(paths.secrets_file, {}, "", scrypt_n=FAST_N)
    write_file(paths)
    with pytest.raises(CredentialsError, match="must not be empty") as info:
        load_key_pair("spot", env={}, cwd=cwd, paths=paths, password=lambda: "")
    show(texts, info.value)


def test_locked_file_without_password_gives_clear_error(
    cwd: Path, paths: Paths, texts: list[str]
) -> None:
    write_file(paths)
    with pytest.raises(CredentialsError) as info:
        load_key_pair("spot", env={}, cwd=cwd, paths=paths)
    assert not isinstance(info.value, NoCredentialsError | SecretsDecryptionError)
    assert show(texts, info.value) == (
        f"secrets file {paths.secrets_file} is locked: "
        "set KRAKKED_MASTER_PASSWORD or run interactively"
    )


def test_secrets_file_without_the_product_means_no_credentials(
    cwd: Path, paths: Paths, texts: list[str]
) -> None:
    write_file(paths, futures=False)
    creds = load_credentials(env={}, cwd=cwd, paths=paths, password=PASSWORD)
    assert creds.futures is None
    assert creds.get("spot").api_key == FILE_SPOT_KEY


def test_missing_file_needs_no_password(cwd: Path, paths: Paths, texts: list[str]) -> None:
    assert load_credentials(env={}, cwd=cwd, paths=paths) == Credentials()


# --- the master password: one rule for the library and the CLI -----------------------------


def test_master_password_comes_from_the_environment_then_a_prompt_then_a_clear_error(
    texts: list[str]
) -> None:
    asked: list[int] = []

    def prompt() -> str:
        asked.append(1)
        return OTHER_PASSWORD

    env = {"KRAKKED_MASTER_PASSWORD": PASSWORD}
    assert master_password(env=env, prompt=prompt, interactive=True) == PASSWORD
    assert asked == []  # the environment wins over asking
    assert master_password(env={}, prompt=prompt, interactive=True) == OTHER_PASSWORD
    assert asked == [1]
    with pytest.raises(CredentialsError) as info:
        master_password(env={}, prompt=prompt, interactive=False)
    assert not isinstance(info.value, NoCredentialsError | SecretsDecryptionError)
    assert show(texts, info.value) == (
        "the secrets file is locked: set KRAKKED_MASTER_PASSWORD or run interactively")
    assert asked == [1]  # never asked off a terminal
    with pytest.raises(CredentialsError, match="must not be empty"):
        master_password(env={}, prompt=lambda: "", interactive=True)


def test_master_password_reads_a_dotenv_file_when_the_environment_lacks_it(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, texts: list[str]
) -> None:
    monkeypatch.delenv("KRAKKED_MASTER_PASSWORD", raising=False)
    (cwd / ".env").write_text(f"KRAKKED_MASTER_PASSWORD='{PASSWORD}'\n")
    assert master_password(cwd=cwd) == PASSWORD
    monkeypatch.setenv("KRAKKED_MASTER_PASSWORD", OTHER_PASSWORD)
    assert master_password(cwd=cwd) == OTHER_PASSWORD  # the real environment wins


def test_the_cli_takes_the_master_password_from_dotenv_off_a_terminal(
    cwd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from krakked.cli import app

    home = tmp_path / "home"
    for var in ("KRAKKED_MASTER_PASSWORD", *(v for pair in ENV_VAR_PAIRS.values()
                                             for names in pair for v in names)):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KRAKKED_HOME", str(home))
    write_file(Paths(config_dir=home / "config", data_dir=home / "data"))
    (cwd / ".env").write_text(f"KRAKKED_MASTER_PASSWORD='{PASSWORD}'\n")
    result = CliRunner().invoke(app, ["creds", "show", "--json"])  # stdin is not a terminal
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["spot"]["source"] == "secrets.enc" and shown["spot"]["problem"] is None
    assert shown["futures"]["key"] == FILE_FUT_KEY[:4] + "…"
    assert PASSWORD not in result.output and FILE_SPOT_SECRET not in result.output


# --- validation of key and secret formats ------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "problem"),
    [(BAD_BASE64, "not valid base64"), (SHORT_SECRET, "too short")],
)
def test_bad_secret_is_rejected_naming_the_source_not_the_value(
    cwd: Path, paths: Paths, texts: list[str], secret: str, problem: str
) -> None:
    env = {"KRAKEN_FUTURES__API_KEY": FUT_KEY, "KRAKEN_FUTURES__API_SECRET": secret}
    with pytest.raises(CredentialsError) as info:
        load_key_pair("futures", env=env, cwd=cwd, paths=paths)
    message = show(texts, info.value)
    assert problem in message
    assert "futures" in message
    assert "KRAKEN_FUTURES__API_SECRET" in message


@pytest.mark.parametrize("key", ["", "   ", "Key With Spaces"])
def test_empty_or_spaced_key_is_rejected(texts: list[str], key: str) -> None:
    with pytest.raises(CredentialsError, match="spot API key from env:KRAKEN_API_KEY") as info:
        KeyPair.create("spot", key, SPOT_SECRET, "env:KRAKEN_API_KEY")
    show(texts, info.value)


def test_unpadded_secret_is_accepted_and_repadded(texts: list[str]) -> None:
    pair = KeyPair.create("futures", FUT_KEY, KRAKEN_FUTURES_EXAMPLE_SECRET, "test")
    assert pair.api_secret.reveal() == KRAKEN_FUTURES_EXAMPLE_SECRET + "="
    assert len(base64.b64decode(pair.api_secret.reveal())) == 65


def test_surrounding_whitespace_is_stripped(texts: list[str]) -> None:
    pair = KeyPair.create("spot", f" {SPOT_KEY}\n", f"\t{SPOT_SECRET}\n", "test")
    assert (pair.api_key, pair.api_secret.reveal()) == (SPOT_KEY, SPOT_SECRET)


@given(st.binary(min_size=32, max_size=128))
def test_any_long_enough_base64_secret_decodes_the_same_with_or_without_padding(
    raw: bytes,
) -> None:
    encoded = base64.b64encode(raw).decode()
    pair = KeyPair.create("spot", "AKEY", encoded.rstrip("="), "test")
    assert base64.b64decode(pair.api_secret.reveal(), validate=True) == raw


# --- no credentials --------------------------------------------------------------------------


@pytest.mark.parametrize("product", ["spot", "futures"])
def test_no_credentials_message_lists_every_way_to_set_them(
    cwd: Path, paths: Paths, texts: list[str], product: str
) -> None:
    with pytest.raises(NoCredentialsError) as info:
        load_key_pair(product, env={}, cwd=cwd, paths=paths)
    message = show(texts, info.value)
    assert "\n" not in message
    for key_var, secret_var in ENV_VAR_PAIRS[product]:
        assert key_var in message and secret_var in message
    assert (f"kraken_{product}.api_key and kraken_{product}.api_secret in .dlt/secrets.toml"
            in message)
    assert "krakked setup" in message
    with pytest.raises(NoCredentialsError) as again:
        Credentials().get(product)
    assert str(again.value) == message


@pytest.mark.parametrize("product", ["spot", "futures"])
def test_no_credentials_message_keeps_the_section_name_on_a_markup_console(
    cwd: Path, paths: Paths, product: str
) -> None:
    # The CLI prints errors through rich, which drops anything that looks like a [style] tag:
    # a "[kraken_spot]" table header vanished there, leaving "under  in .dlt/secrets.toml".
    with pytest.raises(NoCredentialsError) as info:
        load_key_pair(product, env={}, cwd=cwd, paths=paths)
    console = Console(file=io.StringIO(), width=400, color_system=None)
    console.print(f"[red]error:[/] {info.value}")
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"kraken_{product}.api_key and kraken_{product}.api_secret in" in shown
    # and the dotted key is what the file takes: a top-level dotted key is the same table
    write_dlt(cwd, f'kraken_{product}.api_key = "{SPOT_KEY}"\n'
                   f'kraken_{product}.api_secret = "{SPOT_SECRET}"\n')
    assert load_key_pair(product, env={}, cwd=cwd, paths=paths).api_key == SPOT_KEY


def test_bad_arguments_to_the_credential_api_are_usage_errors(paths: Paths) -> None:
    pair = KeyPair.create("spot", SPOT_KEY, SPOT_SECRET, "test")
    with pytest.raises(UsageError, match="unknown product 'options'"):
        load_key_pair("options", env={}, paths=paths)
    with pytest.raises(UsageError, match="unknown product"):
        Credentials().get("margin")
    with pytest.raises(UsageError, match="holds a spot key pair"):
        save_secrets(paths.secrets_file, {"futures": pair}, PASSWORD, scrypt_n=FAST_N)
    with pytest.raises(UsageError, match="scrypt_n must be a power of two"):
        save_secrets(paths.secrets_file, {"spot": pair}, PASSWORD, scrypt_n=1000)
    with pytest.raises(UsageError, match="Secret holds a str"):
        Secret(b"bytes")  # type: ignore[arg-type]


# --- describe_sources ------------------------------------------------------------------------


def test_describe_sources_reports_without_decrypting_or_revealing(
    cwd: Path, paths: Paths, texts: list[str]
) -> None:
    write_file(paths)
    rows = describe_sources(
        "spot", env={"KRAKEN_SPOT__API_KEY": SPOT_KEY}, cwd=cwd, paths=paths
    )
    texts.append(repr(rows))
    by_source = {row["source"]: row for row in rows}
    half = by_source["env:KRAKEN_SPOT__API_KEY"]
    assert half["present"] and not half["complete"]
    assert half["missing"] == "KRAKEN_SPOT__API_SECRET"
    assert half["masked_key"] == SPOT_KEY[:4] + "…"
    assert by_source["secrets.enc"]["present"] and by_source["secrets.enc"]["selected"]
    assert [row["kind"] for row in rows] == ["env", "env", "dlt", "secrets_file"]


def test_describe_sources_selects_the_first_complete_pair(
    cwd: Path, paths: Paths, texts: list[str]
) -> None:
    rows = describe_sources("spot", env=SPOT_ENV, cwd=cwd, paths=paths)
    assert [row["selected"] for row in rows] == [True, False, False, False]
    assert not rows[-1]["present"]


# --- set-up flow ---------------------------------------------------------------------------


def _raises(exc: Exception) -> Callable[[KeyPair], None]:
    def validator(pair: KeyPair) -> None:
        raise exc

    return validator


def _setup(paths: Paths, validator: Callable[[KeyPair], None], **kw: object) -> SetupResult:
    return setup_credentials(
        "spot",
        SPOT_KEY,
        SPOT_SECRET,
        password=PASSWORD,
        validator=validator,
        paths=paths,
        scrypt_n=FAST_N,
        **kw,  # type: ignore[arg-type]
    )


AUTH_FAILURES = [
    AuthError("EAPI:Invalid key", endpoint="spot:Balance", kraken_errors=["EAPI:Invalid key"]),
    AuthError("EAPI:Invalid signature", endpoint="spot:Balance"),
    PermissionDeniedError("EGeneral:Permission denied", endpoint="spot:Balance"),
]
SERVICE_FAILURES = [
    NetworkError("connection timed out", endpoint="spot:Balance"),
    ServiceUnavailableError("EService:Unavailable", endpoint="spot:Balance", status_code=503),
    RateLimitError("EAPI:Rate limit exceeded", endpoint="spot:Balance"),
    MalformedResponseError("truncated body", endpoint="spot:Balance"),
]


@pytest.mark.parametrize("exc", AUTH_FAILURES, ids=lambda e: type(e).__name__)
def test_setup_auth_failure_is_reported_and_not_saved(
    paths: Paths, texts: list[str], exc: Exception
) -> None:
    result = _setup(paths, _raises(exc))
    texts.append(repr(result))
    assert result.status == "auth_failed" and result.auth_problem
    assert not result.saved and not result.validated
    assert not result.can_save_unvalidated and not result.can_retry
    assert result.error == str(exc)
    assert result.error_type == type(exc).__name__
    assert not paths.secrets_file.exists()


def test_setup_auth_failure_is_not_saved_even_when_save_unvalidated_is_asked(
    paths: Paths, texts: list[str]
) -> None:
    result = _setup(paths, _raises(AUTH_FAILURES[0]), save_unvalidated=True)
    assert result.status == "auth_failed" and not result.saved
    assert not paths.secrets_file.exists()


def test_forced_setup_after_auth_failure_saves_unvalidated(
    paths: Paths, texts: list[str]
) -> None:
    result = _setup(paths, _raises(AUTH_FAILURES[0]), force=True)
    texts.append(repr(result))
    assert result.status == "auth_failed"
    assert result.saved and not result.validated
    stored = read_secrets(paths.secrets_file, PASSWORD)["spot"]
    assert stored.api_key == SPOT_KEY and not stored.validated and stored.validated_at is None


@pytest.mark.parametrize("exc", SERVICE_FAILURES, ids=lambda e: type(e).__name__)
def test_setup_network_failure_is_not_an_auth_problem_and_not_saved(
    paths: Paths, texts: list[str], exc: Exception
) -> None:
    result = _setup(paths, _raises(exc))
    texts.append(repr(result))
    assert result.status == "unreachable" and not result.auth_problem
    assert not result.saved and not result.validated
    assert result.can_retry and result.can_save_unvalidated
    assert result.error is not None and "invalid key" not in result.error.lower()
    assert not paths.secrets_file.exists()


def test_setup_network_failure_with_save_unvalidated_saves_unvalidated(
    paths: Paths, texts: list[str]
) -> None:
    result = _setup(paths, _raises(SERVICE_FAILURES[0]), save_unvalidated=True)
    assert result.status == "unreachable"
    assert result.saved and not result.validated and not result.can_save_unvalidated
    stored = read_secrets(paths.secrets_file, PASSWORD)["spot"]
    assert (stored.api_key, stored.api_secret.reveal()) == (SPOT_KEY, SPOT_SECRET)
    assert not stored.validated


def test_successful_setup_saves_validated_with_timestamp_and_keeps_other_product(
    paths: Paths, texts: list[str]
) -> None:
    write_file(paths, spot=False)
    stamp = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    seen: list[KeyPair] = []
    result = _setup(paths, seen.append, now=lambda: stamp)
    texts.append(repr(result))
    assert [p.api_key for p in seen] == [SPOT_KEY]
    assert result.status == "validated" and result.saved and result.validated
    assert result.validated_at == stamp and result.error is None
    assert result.path == paths.secrets_file
    stored = read_secrets(paths.secrets_file, PASSWORD)
    assert stored["spot"].validated and stored["spot"].validated_at == stamp
    assert stored["spot"].api_secret == Secret(SPOT_SECRET)
    assert stored["futures"].api_key == FILE_FUT_KEY
    assert stat.S_IMODE(paths.secrets_file.stat().st_mode) == 0o600


def test_setup_with_a_password_that_does_not_open_the_existing_file_leaves_it_untouched(
    paths: Paths, texts: list[str]
) -> None:
    write_file(paths)
    before = paths.secrets_file.read_bytes()
    seen: list[KeyPair] = []
    with pytest.raises(SecretsDecryptionError) as info:
        setup_credentials(
            "spot", SPOT_KEY, SPOT_SECRET, password=OTHER_PASSWORD, validator=seen.append,
            paths=paths, scrypt_n=FAST_N,
        )
    show(texts, info.value)
    assert paths.secrets_file.read_bytes() == before
    assert seen == []


def test_setup_rejects_a_malformed_secret_before_calling_kraken(
    paths: Paths, texts: list[str]
) -> None:
    seen: list[KeyPair] = []
    with pytest.raises(CredentialsError, match="not valid base64") as info:
        setup_credentials(
            "spot", SPOT_KEY, BAD_BASE64, password=PASSWORD, validator=seen.append, paths=paths,
            scrypt_n=FAST_N,
        )
    show(texts, info.value)
    assert seen == []


def test_remove_credentials_keeps_the_other_product_and_deletes_an_empty_file(
    paths: Paths, texts: list[str]
) -> None:
    write_file(paths)
    assert remove_credentials("spot", PASSWORD, paths, scrypt_n=FAST_N)
    assert set(read_secrets(paths.secrets_file, PASSWORD)) == {"futures"}
    assert not remove_credentials("spot", PASSWORD, paths, scrypt_n=FAST_N)
    assert remove_credentials("futures", PASSWORD, paths, scrypt_n=FAST_N)
    assert not paths.secrets_file.exists()


# --- redaction -------------------------------------------------------------------------------


def test_reprs_never_show_key_or_secret(texts: list[str]) -> None:
    secret = Secret(SPOT_SECRET)
    pair = KeyPair.create("spot", SPOT_KEY, SPOT_SECRET, "env:KRAKEN_API_KEY", validated=True)
    creds = Credentials(spot=pair)
    result = SetupResult("spot", "validated", True, True, pair.masked_key)
    assert repr(secret) == str(secret) == f"{secret}" == "Secret('REDACTED')"
    assert repr(pair) == (
        "KeyPair(product='spot', api_key='Spot…', source='env:KRAKEN_API_KEY', validated=True)"
    )
    for obj in (secret, pair, creds, result, pair.api_secret):
        texts.extend([repr(obj), str(obj), f"{obj}", f"{obj!r}"])


def test_secret_compares_by_value_in_constant_time() -> None:
    assert Secret(SPOT_SECRET) == Secret(SPOT_SECRET)
    assert Secret(SPOT_SECRET) != Secret(FUT_SECRET)
    assert hash(Secret(SPOT_SECRET)) == hash(Secret(SPOT_SECRET))
