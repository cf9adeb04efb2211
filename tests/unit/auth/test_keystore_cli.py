"""Key file rotation, the secrets file, and the client/keys/token CLI commands."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import stat
import time
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.auth.authenticator import Authenticator
from gateway.auth.clientstore import ClientStore, SecretsFileError
from gateway.auth.commands import register
from gateway.auth.config import AuthConfig
from gateway.auth.keystore import KeyFile, LocalKeySource, public_jwks, signing_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_file_is_created_private_with_one_es256_key(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "d" / "keys.json").ensure()
    assert len(keys) == 1
    assert keys[0].alg == "ES256"
    assert mode(tmp_path / "d" / "keys.json") == 0o600
    jwks = public_jwks(keys)
    assert "d" not in jwks["keys"][0]  # only the public part is published


def test_rotation_keeps_old_keys_until_their_tokens_expire(tmp_path: Path) -> None:
    key_file = KeyFile(tmp_path / "keys.json")
    first = key_file.ensure()[0]
    now = time.time() + 10
    second = key_file.rotate(3600, now=now)
    keys = key_file.load()
    assert [k.kid for k in keys] == [first.kid, second.kid]
    assert signing_key(keys).kid == second.kid
    old = keys[0]
    assert old.retire_at is not None
    assert old.retire_at >= now + 3600
    assert {k["kid"] for k in public_jwks(keys, now=now + 3599)["keys"]} == {first.kid, second.kid}
    assert {k["kid"] for k in public_jwks(keys, now=old.retire_at + 1)["keys"]} == {second.kid}
    # A later rotation drops keys already retired.
    third = key_file.rotate(3600, now=old.retire_at + 1)
    assert [k.kid for k in key_file.load()] == [second.kid, third.kid]
    assert mode(tmp_path / "keys.json") == 0o600


def test_secrets_are_stored_only_as_argon2_hashes(tmp_path: Path) -> None:
    store = ClientStore(tmp_path / "secrets.yaml")
    secret = store.add("billing", ["chat"])
    text = (tmp_path / "secrets.yaml").read_text()
    assert secret not in text
    assert "$argon2id$" in text
    assert mode(tmp_path / "secrets.yaml") == 0o600
    verified = store.verify("billing", secret)
    assert verified is not None
    assert verified.scopes == ("chat",)
    assert store.verify("billing", secret + "x") is None
    assert store.verify("nobody", secret) is None
    with pytest.raises(SecretsFileError, match="exists"):
        store.add("billing", [])


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_client_add_prints_the_secret_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secrets_file = tmp_path / "secrets.yaml"
    args = _parse(
        [
            "client",
            "add",
            "demo",
            "--scope",
            "chat",
            "--scope",
            "models",
            "--auth-secrets-file",
            str(secrets_file),
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    secret = out.split("client_secret:")[1].strip()
    assert ClientStore(secrets_file).verify("demo", secret) is not None
    assert yaml.safe_load(secrets_file.read_text())["clients"]["demo"]["scopes"] == ["chat", "models"]
    assert args.func(args) == 1  # already exists


def test_cli_commands_share_the_settings_flags_and_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
    rotate = _parse(["keys", "rotate"])
    assert rotate.func(rotate) == 0
    assert (tmp_path / "issuer-keys.json").is_file()  # the data dir's key file, as `serve` uses it
    monkeypatch.setenv("GATEWAY_AUTH_KEY_FILE", str(tmp_path / "k.json"))
    rotate = _parse(["keys", "rotate"])
    assert rotate.func(rotate) == 0
    assert (tmp_path / "k.json").is_file()
    capsys.readouterr()
    monkeypatch.setenv("GATEWAY_AUTH_ISSUER", "http://127.0.0.1:7000")
    token = _parse(["token", "--client", "demo-app"])
    assert token.func(token) == 0
    claims = json.loads(base64.urlsafe_b64decode(capsys.readouterr().out.split(".")[1] + "=="))
    assert claims["iss"] == "http://127.0.0.1:7000"


def test_cli_token_for_a_client_no_policy_names_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parse(["token", "--client", "nobody", "--data-dir", str(tmp_path)])
    assert args.func(args) == 1
    err = capsys.readouterr()
    assert err.out == ""
    assert "no client 'nobody'" in err.err
    assert "clients.yaml" in err.err


async def test_cli_token_and_rotate_verify_through_the_gateway_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "keys.json"
    config = AuthConfig(
        key_file=key_file, secrets_file=tmp_path / "s.yaml", builtin_issuer="http://127.0.0.1:8080"
    )
    args = _parse(
        ["token", "--client", "demo-app", "--scope", "chat", "--ttl", "600", "--auth-key-file", str(key_file)]
    )
    assert args.func(args) == 0
    token = capsys.readouterr().out.strip()
    async with httpx.AsyncClient() as http:
        auth = Authenticator.from_config(config, http)
        principal = await auth.authenticate(f"Bearer {token}")
        assert (principal.client_id, principal.scopes) == ("demo-app", frozenset({"chat"}))
        rotate = _parse(["keys", "rotate", "--auth-key-file", str(key_file)])
        assert rotate.func(rotate) == 0
        capsys.readouterr()
        assert args.func(args) == 0
        rotated = capsys.readouterr().out.strip()
        await asyncio.sleep(1.1)  # the local key source's refetch cooldown
        assert (await auth.authenticate(f"Bearer {rotated}")).client_id == "demo-app"
        assert (await auth.authenticate(f"Bearer {token}")).client_id == "demo-app"  # old key still trusted
    assert len(await LocalKeySource(KeyFile(key_file)).fetch()) == 2


def test_cli_token_refuses_excessive_ttl(tmp_path: Path) -> None:
    args = _parse(["token", "--client", "demo-app", "--ttl", "999999", "--data-dir", str(tmp_path)])
    assert args.func(args) == 2


def test_a_rotation_within_the_same_second_still_signs_with_the_new_key(tmp_path: Path) -> None:
    key_file = KeyFile(tmp_path / "keys.json")
    now = time.time()
    first = key_file.rotate(3600, now=now)
    second = key_file.rotate(3600, now=now)
    keys = key_file.load()
    assert first.created == second.created
    assert signing_key(keys).kid == second.kid
