"""Guard rules at run time: a caller each, with its timeout, circuit breaker and verdict cache.

`GuardRegistry` (one per process, built by ``state.py``) turns a bundle's classifier and webhook rules into
`Guard` objects when the policy loads (``prepare``, so a missing key file fails the load) and keeps each
guard across reloads while its rule is unchanged, so the breaker and the cache survive a reload.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.guardrails.breaker import CircuitBreaker
from gateway.guardrails.guard_http import GuardAnswer, GuardCaller, GuardCallError, GuardInput
from gateway.guardrails.guard_model import ClassifierCaller
from gateway.guardrails.pipeline import Decision
from gateway.guardrails.webhook import WebhookCaller
from gateway.policy.sections import ClassifierRule, PolicyBundle, WebhookRule

GuardRule = ClassifierRule | WebhookRule
CallObserver = Callable[[str, str, str], None]
"""``observer(rule, outcome, breaker state)``: outcome is allow, flag, block, cached or an error reason."""
ERROR_CATEGORY = "guard_error"
_RECENT_BUNDLES = 4  # snapshots whose guard set is kept: the current one and those requests may still hold


@dataclass(frozen=True, slots=True)
class EngineRef:
    base_url: str
    api_key: str | None


class GuardSetupError(ValueError):
    """A guard rule cannot be set up (a key file missing, no engine of role guard)."""


class Guard:
    """One rule's guard. ``judge`` never raises for a guard failure: ``on_error`` turns it into a decision."""

    __slots__ = ("_cache", "_caller", "_observer", "breaker", "rule")

    def __init__(self, rule: GuardRule, caller: GuardCaller, observer: CallObserver | None = None) -> None:
        self.rule = rule
        self.breaker = CircuitBreaker(rule.breaker_failures, rule.breaker_cooldown_s)
        self._caller = caller
        self._cache: OrderedDict[bytes, GuardAnswer] = OrderedDict()
        self._observer = observer

    def _key(self, item: GuardInput) -> bytes:
        digest = hashlib.sha256()
        for part in (item.where, item.client or "", item.prompt or "", item.text):
            data = part.encode()
            digest.update(len(data).to_bytes(8, "big") + data)
        return digest.digest()

    async def judge(self, item: GuardInput, mode: str) -> Decision | None:
        """The decision on ``item`` (None: allowed); ``mode`` is the rule's mode for this client."""
        key = self._key(item)
        answer = self._cache.get(key)
        if answer is not None:
            self._cache.move_to_end(key)
            self._observe("cached")
        else:
            try:
                answer = await self._call(item)
            except GuardCallError as exc:
                self._observe(exc.reason)
                return self._error(item, mode, exc.reason)
            self._observe(answer.action)
            if self.rule.cache_size:
                self._cache[key] = answer
                if len(self._cache) > self.rule.cache_size:
                    self._cache.popitem(last=False)
        if answer.action == "allow":
            return None
        return Decision(
            self.rule.id, answer.category, answer.action, mode, item.where, 0, len(item.text), item.text
        )

    async def _call(self, item: GuardInput) -> GuardAnswer:
        breaker = self.breaker
        if not breaker.allow():
            raise GuardCallError("breaker_open")
        try:
            async with asyncio.timeout(self.rule.timeout_ms / 1000.0):
                answer = await self._caller.call(item)
        except TimeoutError:
            breaker.failure()
            raise GuardCallError("timeout") from None
        except GuardCallError:
            breaker.failure()
            raise
        except BaseException:
            breaker.abandon()  # cancelled (client gone): neither a success nor a failure of the guard
            raise
        breaker.success()
        return answer

    def _error(self, item: GuardInput, mode: str, reason: str) -> Decision:
        # on_error allow: recorded as a flag so that unchecked text is visible in the audit trail
        action = "block" if self.rule.on_error == "block" else "flag"
        return Decision(
            self.rule.id,
            ERROR_CATEGORY,
            action,
            mode,
            item.where,
            0,
            len(item.text),
            item.text,
            (("error", reason),),
        )

    def _observe(self, outcome: str) -> None:
        if self._observer is not None:
            self._observer(self.rule.id, outcome, self.breaker.state)

    async def aclose(self) -> None:
        await self._caller.aclose()


class GuardSet:
    """The guards of one policy snapshot, with each client's overrides (disable, shadow) applied."""

    __slots__ = ("_overrides", "guards")

    def __init__(self, guards: tuple[Guard, ...], bundle: PolicyBundle) -> None:
        self.guards = guards
        self._overrides = {
            client: (frozenset(p.guardrails.disable), frozenset(p.guardrails.shadow))
            for client, p in bundle.clients.clients.items()
            if p.guardrails is not None
        }

    def active(self, client_id: str | None, where: str) -> list[tuple[Guard, str]]:
        """The guards in force for this client at ``where``, each with its mode."""
        disable, shadow = self._overrides.get(client_id or "", (frozenset(), frozenset()))
        return [
            (g, "shadow" if g.rule.id in shadow else g.rule.mode)
            for g in self.guards
            if where in g.rule.where and g.rule.id not in disable
        ]


class GuardRegistry:
    """Builds guards per policy load and keeps them while their rule is unchanged (one per process)."""

    def __init__(
        self, engines: Mapping[str, EngineRef] | None = None, observer: CallObserver | None = None
    ) -> None:
        self._engines = dict(engines or {})
        self._observer = observer
        # Every guard made, by its rule's JSON: a rule version keeps one breaker and one cache for the process's
        # life, and requests still on an older snapshot find theirs. Rule versions are few; closed at shutdown.
        self._made: dict[str, Guard] = {}
        self._current: tuple[Guard, ...] = ()
        # id(bundle) -> (bundle, its set); holding the bundle keeps its id from being reused while it is a key
        self._sets: OrderedDict[int, tuple[PolicyBundle, GuardSet]] = OrderedDict()

    def prepare(self, bundle: PolicyBundle) -> GuardSet:
        """The bundle's guard set, now the current one (``/readyz``); raises `GuardSetupError` listing every
        rule that cannot be set up. Called by the policy compiler on every load."""
        guard_set = self._build(bundle)
        self._current = guard_set.guards
        return guard_set

    def for_bundle(self, bundle: PolicyBundle) -> GuardSet:
        """The guard set of a request's snapshot (built on a miss, e.g. a snapshot loaded elsewhere)."""
        found = self._sets.get(id(bundle))
        return found[1] if found is not None else self._build(bundle)

    def guards(self) -> tuple[Guard, ...]:
        """The guards of the policy loaded last."""
        return self._current

    def _build(self, bundle: PolicyBundle) -> GuardSet:
        problems: list[str] = []
        guards: list[Guard] = []
        for rule in bundle.guardrails.rules:
            if not isinstance(rule, ClassifierRule | WebhookRule):
                continue
            try:
                secret = _secret(rule.secret_file if isinstance(rule, WebhookRule) else rule.engine.key_file)
                # the secret is part of the guard's identity: a rotated key file takes effect on the next load
                spec = rule.model_dump_json() + "\0" + hashlib.sha256((secret or "").encode()).hexdigest()
                guard = self._made.get(spec)
                if guard is None:
                    guard = self._made[spec] = Guard(rule, self._caller(rule, secret), self._observer)
            except GuardSetupError as exc:
                problems.append(f"rule {rule.id!r}: {exc}")
                continue
            guards.append(guard)
        if problems:
            raise GuardSetupError("; ".join(problems))
        guard_set = GuardSet(tuple(guards), bundle)
        self._sets[id(bundle)] = (bundle, guard_set)
        while len(self._sets) > _RECENT_BUNDLES:
            self._sets.popitem(last=False)
        return guard_set

    def _caller(self, rule: GuardRule, secret: str | None) -> GuardCaller:
        if isinstance(rule, WebhookRule):
            return WebhookCaller(rule.url, secret, rule.id)
        engine = rule.engine
        if engine.role is not None:
            ref = self._engines.get(engine.role)
            if ref is None:
                raise GuardSetupError(f"no engine of role {engine.role!r} runs in this deployment")
        else:
            ref = EngineRef(engine.url or "", secret)
        return ClassifierCaller(
            ref.base_url,
            ref.api_key,
            rule.model,
            rule.categories,
            other=rule.other,
            controversial=rule.controversial,
        )

    async def aclose(self) -> None:
        for guard in self._made.values():
            await guard.aclose()


def _secret(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise GuardSetupError(
            f"cannot read secret file {path!r}: {exc.strerror or type(exc).__name__}"
        ) from None


__all__ = [
    "ERROR_CATEGORY",
    "CallObserver",
    "EngineRef",
    "Guard",
    "GuardRegistry",
    "GuardSet",
    "GuardSetupError",
]
