"""Typed model of a policy bundle, one class per section file.

Every model forbids unknown keys so that a typo in a policy file is an error, never a silently
ignored setting. The JSON Schema in ``policies/schema.json`` is generated from these classes.
Each feature owns its section: guardrails and loops read these models, never the YAML files.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Action = Literal["block", "mask", "flag"]
Mode = Literal["enforce", "shadow"]
Where = Literal["input", "output", "reasoning"]
Endpoint = Literal["chat", "completions", "models"]
ALL_WHERE: tuple[Where, ...] = ("input", "output", "reasoning")
ALL_ENDPOINTS: tuple[Endpoint, ...] = ("chat", "completions", "models")

RuleId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,63}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- limits.yaml -------------------------------------------------------------------------------


class TierLimits(Strict):
    """Limits of one tier. Rates use the `limits` notation: ``60/minute;1000/day``."""

    requests: str | None = Field(None, description="Requests per window, e.g. '60/minute;1000/day'.")
    tokens: str | None = Field(None, description="Prompt plus completion tokens per window.")
    concurrency: int | None = Field(None, ge=1, description="Concurrent requests (streams) in flight.")


class LimitsSection(Strict):
    tiers: dict[str, TierLimits] = Field(default_factory=dict)
    on_redis_error: Literal["fail_open", "fail_closed"] = Field(
        "fail_closed", description="fail_open: local in-memory limiter per replica; fail_closed: 503."
    )


# --- clients.yaml ------------------------------------------------------------------------------


class GuardrailOverride(Strict):
    """Per-client changes to guardrail rules, by rule id."""

    disable: list[RuleId] = Field(default_factory=list, description="Rules not applied to this client.")
    shadow: list[RuleId] = Field(default_factory=list, description="Rules only recorded for this client.")


class LoopOverride(Strict):
    """Per-client loop thresholds; unset fields keep the bundle's values."""

    enabled: bool | None = None
    min_repeats: int | None = Field(None, ge=2)
    max_period_chars: int | None = Field(None, ge=1)
    min_loop_chars: int | None = Field(None, ge=1)
    near_dup_ratio: float | None = Field(None, gt=0, le=1)
    near_dup_window: int | None = Field(None, ge=16)


class ClientPolicy(Strict):
    tier: str
    models: list[str] = Field(default_factory=lambda: ["*"], description="Allowed models (fnmatch globs).")
    scopes: list[str] = Field(default_factory=list, description="Scopes the built-in issuer may grant.")
    endpoints: list[Endpoint] = Field(default_factory=lambda: list(ALL_ENDPOINTS))
    limits: TierLimits | None = Field(None, description="Per-client override of the tier's limits.")
    guardrails: GuardrailOverride | None = None
    loops: LoopOverride | None = None


class ScopeGrant(Strict):
    """What a scope in a token grants, for clients not listed by id (e.g. tokens from the company IdP)."""

    tier: str | None = None
    models: list[str] = Field(default_factory=list)
    endpoints: list[Endpoint] = Field(default_factory=lambda: list(ALL_ENDPOINTS))


class ClientsSection(Strict):
    clients: dict[str, ClientPolicy] = Field(default_factory=dict)
    scopes: dict[str, ScopeGrant] = Field(default_factory=dict)
    default_tier: str | None = Field(
        None, description="Tier for an authenticated principal matched only by scope; None refuses it."
    )


# --- guardrails.yaml ---------------------------------------------------------------------------


class RuleBase(Strict):
    id: RuleId
    category: str = Field(min_length=1)
    action: Action
    mode: Mode = "enforce"
    where: list[Where] = Field(default_factory=lambda: list(ALL_WHERE))
    description: str = ""


class WordRule(RuleBase):
    """Words from plain-text lists (``lists/NAME.txt``) and/or inline, matched after normalisation."""

    kind: Literal["words"] = "words"
    lists: list[str] = Field(default_factory=list, description="List names, files lists/NAME.txt.")
    words: list[str] = Field(default_factory=list)


class PatternRule(RuleBase):
    """A `regex` pattern matched on the raw text, optionally confirmed by a checksum validator."""

    kind: Literal["pattern"] = "pattern"
    pattern: str = Field(min_length=1)
    ignore_case: bool = False
    validator: Literal["luhn", "cn_resident_id"] | None = None


Rule = Annotated[WordRule | PatternRule, Field(discriminator="kind")]


class GuardrailsSection(Strict):
    mask_char: str = Field("*", min_length=1, max_length=1)
    max_separator_gap: int = Field(
        2, ge=0, le=8, description="Separators (spaces, punctuation, symbols) allowed between two characters of a word."
    )
    pattern_timeout_ms: float = Field(20.0, gt=0, le=1000, description="Per-match timeout of a pattern rule.")
    rules: list[Rule] = Field(default_factory=list)


# --- loops.yaml --------------------------------------------------------------------------------


class EngineRepetitionDetection(Strict):
    """vLLM's per-request ``repetition_detection`` (token n-grams), sent as an engine-side backstop."""

    min_pattern_size: int = Field(1, ge=1)
    max_pattern_size: int = Field(64, ge=1)
    min_count: int = Field(8, ge=2)


class LoopsSection(Strict):
    enabled: bool = True
    rule_id: RuleId = "loop.repetition"
    mode: Mode = "enforce"
    where: list[Literal["output", "reasoning"]] = Field(default_factory=lambda: ["output", "reasoning"])
    min_repeats: int = Field(4, ge=2, description="Repeats of a unit at the tail that make an exact loop.")
    max_period_chars: int = Field(2048, ge=1, description="Longest repeated unit considered, in characters.")
    min_loop_chars: int = Field(64, ge=1, description="Shortest total repeated span that counts as a loop.")
    near_dup_ratio: float = Field(0.8, gt=0, le=1, description="Share of repeated n-grams in the window.")
    near_dup_window: int = Field(1024, ge=16, description="Sliding window for near-duplicate detection.")
    engine_backstop: EngineRepetitionDetection | None = None


# --- generation.yaml ---------------------------------------------------------------------------


class Sampling(Strict):
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)


class GenerationSection(Strict):
    max_tokens_cap: int = Field(4096, ge=1, description="Upper bound on max_tokens; larger requests are capped.")
    default_max_tokens: int = Field(1024, ge=1, description="max_tokens when the client sends none.")
    context_cap: int = Field(16384, ge=1, description="Estimated prompt plus max_tokens may not exceed this.")
    thinking: Sampling = Sampling(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0)
    non_thinking: Sampling = Sampling(temperature=0.7, top_p=0.8, top_k=20)
    refuse_greedy: bool = Field(False, description="Refuse temperature 0 (greedy decoding loops more).")


# --- audit.yaml --------------------------------------------------------------------------------


class AuditSection(Strict):
    on_failure: Literal["continue", "block"] = Field(
        "continue", description="block: refuse traffic (503) while the audit sink fails."
    )


class PolicyBundle(Strict):
    """A whole bundle: one section per YAML file, plus the word lists they refer to."""

    clients: ClientsSection = ClientsSection()
    limits: LimitsSection = LimitsSection()
    guardrails: GuardrailsSection = GuardrailsSection()
    loops: LoopsSection = LoopsSection()
    generation: GenerationSection = GenerationSection()
    audit: AuditSection = AuditSection()
    word_lists: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="Loaded lists/NAME.txt contents; filled by the loader."
    )
