"""Signing keys of the built-in issuer, kept in one JSON key file (mode 0600).

File shape::

    {"version": 1, "keys": [{"kid": "...", "alg": "ES256", "created": 1700000000,
                             "retire_at": null, "jwk": {...private JWK...}}]}

The newest key signs. ``rotate`` adds a new key and gives every older key a ``retire_at`` after the
longest token lifetime, so tokens signed before the rotation keep verifying until they expire;
keys past ``retire_at`` are dropped from the JWKS and from the file at the next rotation.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key

from gateway.auth.jwks import KeySourceUnavailable

logger = logging.getLogger(__name__)

KEY_ALG = "ES256"
# Tokens minted just before a rotation may also be verified with this much clock skew.
RETIRE_MARGIN_S = 300


class KeyFileError(Exception):
    """The key file is missing, unreadable or malformed."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    kid: str
    alg: str
    created: int
    retire_at: int | None
    key: Key

    def to_dict(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "alg": self.alg,
            "created": self.created,
            "retire_at": self.retire_at,
            "jwk": self.key.as_dict(private=True),
        }

    def is_live(self, now: float) -> bool:
        return self.retire_at is None or now < self.retire_at


def new_key(now: float | None = None) -> StoredKey:
    created = int(now if now is not None else time.time())
    kid = f"{time.strftime('%Y%m%d', time.gmtime(created))}-{secrets.token_hex(4)}"
    key = ECKey.generate_key("P-256", parameters={"kid": kid, "alg": KEY_ALG, "use": "sig"}, private=True)
    return StoredKey(kid, KEY_ALG, created, None, key)


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def warn_if_readable_by_others(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("%s is accessible by group or others (mode %o); use chmod 600", path, mode & 0o777)


class KeyFile:
    """Load, create, rotate and sign with the issuer keys in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[StoredKey]:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {self.path}: {exc.strerror}") from None
        warn_if_readable_by_others(self.path)
        try:
            document = json.loads(raw)
            entries = document["keys"]
            keys = [
                StoredKey(
                    kid=str(e["kid"]),
                    alg=str(e["alg"]),
                    created=int(e["created"]),
                    retire_at=None if e.get("retire_at") is None else int(e["retire_at"]),
                    key=ECKey.import_key(e["jwk"]),
                )
                for e in entries
            ]
        except (ValueError, KeyError, TypeError, JoseError) as exc:
            raise KeyFileError(f"malformed key file {self.path}: {type(exc).__name__}") from None
        if not keys:
            raise KeyFileError(f"key file {self.path} holds no keys")
        return sorted(keys, key=lambda k: k.created)

    def save(self, keys: list[StoredKey]) -> None:
        document = {"version": 1, "keys": [k.to_dict() for k in keys]}
        write_private_file(self.path, json.dumps(document, indent=2).encode())

    def ensure(self) -> list[StoredKey]:
        """Load the keys, creating the file with one fresh key when it does not exist yet."""
        if not self.path.exists():
            self.save([new_key()])
        return self.load()

    def rotate(self, max_token_ttl_s: int, now: float | None = None) -> StoredKey:
        """Add a new signing key; older keys retire once every token they signed has expired."""
        moment = time.time() if now is None else now
        keys = self.load() if self.path.exists() else []
        retire = int(moment) + max_token_ttl_s + RETIRE_MARGIN_S
        kept = [
            k if k.retire_at is not None else StoredKey(k.kid, k.alg, k.created, retire, k.key)
            for k in keys
            if k.is_live(moment)
        ]
        fresh = new_key(moment)
        self.save([*kept, fresh])
        return fresh


def signing_key(keys: list[StoredKey]) -> StoredKey:
    """The newest key signs; of keys created in the same second, the one added last (file order)."""
    return max(reversed(keys), key=lambda k: k.created)


def public_jwks(keys: list[StoredKey], now: float | None = None) -> dict[str, Any]:
    moment = time.time() if now is None else now
    return {"keys": [k.key.as_dict(private=False) for k in keys if k.is_live(moment)]}


def mint_token(
    key: StoredKey,
    *,
    issuer: str,
    audience: str,
    client_id: str,
    scopes: list[str],
    ttl_s: int,
    now: float | None = None,
) -> str:
    """A signed RFC 9068 access token for ``client_id``."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": client_id,
        "aud": audience,
        "client_id": client_id,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
        "jti": secrets.token_urlsafe(16),
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    header = {"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}
    return jwt.encode(header, claims, key.key, algorithms=[key.alg])


class LocalKeySource:
    """The built-in issuer's public keys as a KeySource: verified like any external issuer's."""

    def __init__(self, key_file: KeyFile) -> None:
        self._file = key_file

    async def fetch(self) -> dict[str, Key]:
        try:
            keys = self._file.load()
        except KeyFileError as exc:
            raise KeySourceUnavailable(str(exc)) from None
        now = time.time()
        out: dict[str, Key] = {}
        for k in keys:
            if k.is_live(now):
                out[k.kid] = ECKey.import_key(k.key.as_dict(private=False))
        return out
