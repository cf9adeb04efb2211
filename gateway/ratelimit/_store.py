"""The storage interface both backends implement, and the key layout they share.

The strategy is the same everywhere: fixed windows that start at their first hit (the semantics of
`limits`' FixedWindowRateLimiter), checked and charged all together, plus a lease set for
concurrency. Only where the state lives differs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from typing import Protocol

from ._plan import Outcome, Plan

_SAFE_ID = re.compile(r"[A-Za-z0-9_.:@\-]{1,64}")


def client_base(prefix: str, client_id: str) -> str:
    """Key stem of one client. The id is a Redis Cluster hash tag so one admission stays on one slot;
    ids that could break the tag (braces, odd bytes, very long) are hashed."""
    if not _SAFE_ID.fullmatch(client_id):
        client_id = "h-" + hashlib.blake2b(client_id.encode(), digest_size=12).hexdigest()
    return f"{prefix}{{{client_id}}}:"


def lease_key(base: str) -> str:
    return base + "c"


def request_key(base: str, length_s: int) -> str:
    return f"{base}r:{length_s}"


def token_key(base: str, length_s: int) -> str:
    return f"{base}t:{length_s}"


def undo_key(base: str, lease_id: str) -> str:
    """Marker of one admission (what cancel.lua needs to undo it), or its tombstone."""
    return f"{base}u:{lease_id}"


class AdmissionCancelled(Exception):
    """The storage refused an admission that a cancel had reached first; nothing was charged."""


class Store(Protocol):
    """One backend. Each method is one atomic step; `admit` writes nothing unless it admits."""

    kind: str
    suspends: bool  # does admit() await I/O (and so can be interrupted)?
    # can admit() fail after the storage applied it (a lost reply)? Then admit leaves an undo marker,
    # settle deletes it, and cancel undoes the admission through it.
    undoable: bool

    async def admit(
        self, base: str, plan: Plan, tokens: int, lease_id: str, lease_ttl_ms: int
    ) -> Outcome: ...

    async def settle(
        self, base: str, plan: Plan, lease_id: str | None, token_delta: int, starts: tuple[int, ...]
    ) -> None: ...

    async def cancel(self, base: str, plan: Plan, lease_id: str) -> bool:
        """Undo the admission ``lease_id`` if it was applied, else make sure it never charges.
        True when an applied admission was undone."""
        ...

    async def refresh(self, base: str, lease_ids: Collection[str], lease_ttl_ms: int) -> None: ...

    async def ping(self) -> bool: ...

    async def warm_up(self, timeout_s: float) -> bool: ...

    async def aclose(self) -> None: ...
