"""Client secrets of the built-in issuer, stored only as argon2id hashes.

File shape (YAML, mode 0600, kept outside ``policies/`` so the security team's repository never
holds credentials)::

    clients:
      billing-app:
        secret_hash: $argon2id$v=19$m=65536,t=3,p=4$...
        scopes: [chat, models]
        created: 1700000000
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.auth.keystore import warn_if_readable_by_others, write_private_file


class SecretsFileError(Exception):
    """The secrets file is unreadable or malformed."""


@dataclass(frozen=True, slots=True)
class StoredClient:
    client_id: str
    secret_hash: str
    scopes: tuple[str, ...]
    created: int


def _hasher() -> PasswordHasher:
    return PasswordHasher()


class ClientStore:
    """Read and update the secrets file; verify presented client secrets."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime_ns: int | None = None
        self._clients: dict[str, StoredClient] = {}
        self._hasher = _hasher()
        # Verified against when the client is unknown, so both cases cost the same time.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    def load(self) -> dict[str, StoredClient]:
        """Current clients, re-read when the file changed (``client add`` while the server runs)."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._clients, self._mtime_ns = {}, None
            return self._clients
        if mtime == self._mtime_ns:
            return self._clients
        warn_if_readable_by_others(self.path)
        try:
            document = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
            entries = document.get("clients") or {}
            clients = {
                str(cid): StoredClient(
                    client_id=str(cid),
                    secret_hash=str(entry["secret_hash"]),
                    scopes=tuple(str(s) for s in entry.get("scopes") or ()),
                    created=int(entry.get("created") or 0),
                )
                for cid, entry in entries.items()
            }
        except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise SecretsFileError(f"malformed secrets file {self.path}: {type(exc).__name__}") from None
        self._clients, self._mtime_ns = clients, mtime
        return clients

    def add(self, client_id: str, scopes: list[str], *, replace: bool = False) -> str:
        """Create (or with ``replace`` re-key) a client; returns the secret, which is never stored."""
        clients = dict(self.load())
        if client_id in clients and not replace:
            raise SecretsFileError(f"client {client_id!r} already exists")
        secret = secrets.token_urlsafe(32)
        clients[client_id] = StoredClient(
            client_id, self._hasher.hash(secret), tuple(scopes), int(time.time())
        )
        document = {
            "clients": {
                c.client_id: {"secret_hash": c.secret_hash, "scopes": list(c.scopes), "created": c.created}
                for c in clients.values()
            }
        }
        write_private_file(self.path, yaml.safe_dump(document, sort_keys=True).encode("utf-8"))
        self._mtime_ns = None
        return secret

    def verify(self, client_id: str, secret: str) -> StoredClient | None:
        """The client when ``secret`` matches its hash; None otherwise. CPU-bound: run in a thread."""
        client = self.load().get(client_id)
        try:
            self._hasher.verify(client.secret_hash if client else self._dummy_hash, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return client
