"""Typed model of a policy bundle, one class per section file.

Every model forbids unknown keys so that a typo in a policy file is an error, never a silently
ignored setting. The JSON Schema in ``policies/schema.json`` is generated from these classes.
Each feature owns its section: guardrails and loops read these models, never the YAML files.
"""

from __future__ import annotations

from typing import Annotated, Literal

from limits import parse_many
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

Action = Literal["block", "mask", "flag"]
Mode = Literal["enforce", "shadow"]
# ``tool_arguments``: the JSON arguments of the tool calls a model streams (output, kept apart from content).
Where = Literal["input", "output", "reasoning", "tool_arguments"]
EndpointName = Literal["chat", "completions", "embeddings", "models"]
ALL_WHERE: tuple[Where, ...] = ("input", "output", "reasoning", "tool_arguments")
ALL_ENDPOINTS: tuple[EndpointName, ...] = ("chat", "completions", "embeddings", "models")

RuleId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,63}$")]
ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_*?\[\]!-]{1,64}$")]
# true: any tool; false: none (a request with tools is refused); a list: tool-name globs (fnmatch).
ToolAccess = bool | list[ToolName]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- limits.yaml -------------------------------------------------------------------------------


class TierLimits(Strict):
    """Limits of one tier. Rates use the `limits` notation: ``60/minute;1000/day``."""

    requests: str | None = Field(None, description="Requests per window, e.g. '60/minute;1000/day'.")
    tokens: str | None = Field(None, description="Prompt plus completion tokens per window.")
    concurrency: int | None = Field(None, ge=1, description="Concurrent requests (streams) in flight.")

    @field_validator("requests", "tokens")
    @classmethod
    def _valid_rates(cls, rates: str | None) -> str | None:
        """A typo in a rate must fail the policy load, not surface on the first request."""
        if rates is not None:
            try:
                parse_many(rates)
            except ValueError as exc:
                raise ValueError(f"{exc}; expected e.g. '60/minute;1000/day'") from None
        return rates


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
    """Per-client loop settings; unset fields keep the bundle's values."""

    enabled: bool | None = None
    mode: Mode | None = None
    min_repeats: int | None = Field(None, ge=2)
    max_period_chars: int | None = Field(None, ge=1, le=4096)
    max_period_lines: int | None = Field(None, ge=1, le=1024)
    min_loop_chars: int | None = Field(None, ge=1)
    min_symbol_loop_chars: int | None = Field(None, ge=1)
    near_dup_ratio: float | None = Field(None, gt=0, le=1)
    near_dup_min_repeats: int | None = Field(None, ge=2)
    near_dup_min_unit_chars: int | None = Field(None, ge=1)
    near_dup_min_letter_share: float | None = Field(None, ge=0, le=1)
    similar_enabled: bool | None = None
    similar_threshold: float | None = Field(None, gt=0, le=1)
    similar_certain: float | None = Field(None, gt=0, le=1)
    similar_min_repeats: int | None = Field(None, ge=3)
    similar_min_unit_tokens: int | None = Field(None, ge=2)
    similar_max_unit_chars: int | None = Field(None, ge=100, le=8192)


class ClientPolicy(Strict):
    tier: str
    models: list[str] = Field(default_factory=lambda: ["*"], description="Allowed models (fnmatch globs).")
    scopes: list[str] = Field(default_factory=list, description="Scopes the built-in issuer may grant.")
    endpoints: list[EndpointName] = Field(default_factory=lambda: list(ALL_ENDPOINTS))
    limits: TierLimits | None = Field(None, description="Per-client override of the tier's limits.")
    guardrails: GuardrailOverride | None = None
    loops: LoopOverride | None = None
    tools: ToolAccess = Field(
        True, description="Tools this client may define: true (any), false (none) or name globs."
    )


class ScopeGrant(Strict):
    """What a scope in a token grants, for clients not listed by id (e.g. tokens from the company IdP)."""

    tier: str | None = None
    models: list[str] = Field(default_factory=list)
    endpoints: list[EndpointName] = Field(default_factory=lambda: list(ALL_ENDPOINTS))
    tools: ToolAccess = Field(
        True, description="Tools the scope grants: true (any), false (none) or name globs; grants add up."
    )


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
    """A `regex` pattern matched on the text with full-width ASCII folded to ASCII (offsets unchanged),
    optionally confirmed by a checksum validator. Matches must fit in ``max_pattern_chars``."""

    kind: Literal["pattern"] = "pattern"
    pattern: str = Field(min_length=1)
    ignore_case: bool = False
    validator: Literal["luhn", "cn_resident_id"] | None = None


GuardOnError = Literal["allow", "block"]
GuardAction = Literal["block", "flag"]
StreamMode = Literal["hold", "watch"]
# Places and stream modes the request flow runs guard rules at. A guard rule naming any other is refused at
# load time (fail closed): a configured rule must never silently do nothing.
GUARD_WIRED_WHERE: frozenset[str] = frozenset({"input", "output", "reasoning", "tool_arguments"})
# hold releases text only after a verdict, which a field's end cannot wait for inside the stream: only the
# answer (``output``), whose end the relay awaits, can be held.
GUARD_STREAM_MODE_PLACES: dict[str, frozenset[str]] = {
    "watch": frozenset({"output", "reasoning", "tool_arguments"}),
    "hold": frozenset({"output"}),
}


class GuardEngine(Strict):
    """An OpenAI-compatible engine serving a guard model: a URL with its key file, or the profile's engine
    of role ``guard`` (``gateway up``)."""

    url: str | None = Field(
        None, pattern=r"^https?://", description="Base URL, e.g. http://10.0.0.5:8001/v1."
    )
    key_file: str | None = Field(None, description="File holding the engine's API key (read at load).")
    role: Literal["guard"] | None = Field(None, description="The profile's engine of this role.")

    @model_validator(mode="after")
    def _one_source(self) -> GuardEngine:
        if (self.url is None) == (self.role is None):
            raise ValueError("give either 'url' (with 'key_file') or 'role: guard'")
        if self.role is not None and self.key_file is not None:
            raise ValueError("'key_file' goes with 'url'; an engine by role brings its own key")
        return self


class GuardRuleBase(Strict):
    """What classifier and webhook rules share: where they run, how long they may take, what a failure does."""

    id: RuleId
    mode: Mode = "enforce"
    where: list[Where] = Field(default_factory=lambda: list[Where](["input"]))
    description: str = ""
    timeout_ms: float = Field(2000.0, gt=0, le=60000, description="Timeout of one guard call.")
    on_error: GuardOnError = Field(
        "block", description="What a failed, timed-out or unparsable call (or an open breaker) does."
    )
    checkpoint_chars: int = Field(
        400, ge=16, le=65536, description="Output: the answer is classified every this many characters."
    )
    stream_mode: StreamMode = Field(
        "watch", description="Output: watch (text flows, cut on Unsafe) or hold (released once Safe)."
    )
    cache_size: int = Field(1024, ge=0, le=1_000_000, description="Verdicts cached by text hash (0: none).")
    breaker_failures: int = Field(5, ge=1, le=1000, description="Failures in a row that open the breaker.")
    breaker_cooldown_s: float = Field(
        30.0, gt=0, le=3600, description="Seconds the breaker stays open before one probe call."
    )

    @field_validator("where")
    @classmethod
    def _where_wired(cls, where: list[Where]) -> list[Where]:
        unwired = sorted(set(where) - GUARD_WIRED_WHERE)
        if unwired:
            wired = ", ".join(sorted(GUARD_WIRED_WHERE)) or "none yet"
            raise ValueError(
                f"guard rules do not run at {', '.join(unwired)} in this version (they run at: {wired})"
            )
        return where

    @field_validator("stream_mode")
    @classmethod
    def _stream_mode_wired(cls, mode: StreamMode, info: ValidationInfo) -> StreamMode:
        where = info.data.get("where") or ()
        places = GUARD_STREAM_MODE_PLACES.get(mode, frozenset())
        unwired = sorted(w for w in where if w != "input" and w not in places)
        if unwired:
            runs = ", ".join(sorted(places)) or "nowhere yet"
            raise ValueError(
                f"stream_mode {mode!r} does not run at {', '.join(unwired)} (it runs at: {runs})"
            )
        return mode


class ClassifierRule(GuardRuleBase):
    """A guard model (Qwen3Guard-Gen) on an OpenAI-compatible engine; its verdict names categories, each
    mapped to an action. ``Safety: Controversial`` takes the ``controversial`` action."""

    kind: Literal["classifier"]
    engine: GuardEngine
    model: str = Field(min_length=1, description="Served model name, e.g. Qwen/Qwen3Guard-Gen-0.6B.")
    categories: dict[str, GuardAction] = Field(
        default_factory=dict, description="Action of each Unsafe category, e.g. {Violent: block, PII: flag}."
    )
    other: GuardAction = Field("block", description="Action of an Unsafe category not listed.")
    controversial: Literal["allow", "block", "flag"] = Field(
        "flag", description="Action of a Controversial verdict."
    )


class WebhookRule(GuardRuleBase):
    """An HTTP guard service: POST ``{"text", "where", "client", "rule"}`` with a bearer secret; it answers
    ``{"action": "allow|block|flag", "category": ...}``."""

    kind: Literal["webhook"]
    url: str = Field(pattern=r"^https?://", description="The service's endpoint.")
    secret_file: str | None = Field(None, description="File holding the bearer secret (read at load).")


def _rule_kind(value: object) -> str | None:
    """``kind`` may be left out: a rule with a ``pattern`` is a pattern rule, any other a word rule."""
    if isinstance(value, dict):
        kind = value.get("kind")
        if kind is None:
            return "pattern" if "pattern" in value else "words"
        return kind if isinstance(kind, str) else None
    return getattr(value, "kind", None)


Rule = Annotated[
    Annotated[WordRule, Tag("words")]
    | Annotated[PatternRule, Tag("pattern")]
    | Annotated[ClassifierRule, Tag("classifier")]
    | Annotated[WebhookRule, Tag("webhook")],
    Discriminator(_rule_kind),
]


class GuardrailsSection(Strict):
    mask_char: str = Field("*", min_length=1, max_length=1)
    max_separator_gap: int = Field(
        2,
        ge=0,
        le=8,
        description="Separators (spaces, punctuation, symbols) allowed between two characters of a word.",
    )
    pattern_timeout_ms: float = Field(
        20.0,
        gt=0,
        le=1000,
        description="Timeout of one pattern scan; a scan that times out blocks (fail closed).",
    )
    max_pattern_chars: int = Field(
        64,
        ge=8,
        le=1024,
        description="Longest text a pattern reads from a match start, look-ahead included; keep pattern "
        "quantifiers bounded by it. Streams hold back text only from where a match may still be in "
        "progress (a number's first digit, say), and never more than this: a match that starts this "
        "far before the end of the text so far counts as final.",
    )
    rules: list[Rule] = Field(default_factory=list)


# --- loops.yaml --------------------------------------------------------------------------------


class EngineRepetitionDetection(Strict):
    """vLLM's per-request ``repetition_detection`` (token n-grams), sent as an engine-side backstop."""

    min_pattern_size: int = Field(1, ge=1, description="Shortest token n-gram checked.")
    max_pattern_size: int = Field(64, ge=1, description="Longest token n-gram checked.")
    min_count: int = Field(8, ge=2, description="Repeats of an n-gram that stop the request.")

    @model_validator(mode="after")
    def _sizes_ordered(self) -> EngineRepetitionDetection:
        if self.min_pattern_size > self.max_pattern_size:
            raise ValueError("min_pattern_size must not exceed max_pattern_size")
        return self


StreamWhere = Literal["output", "reasoning", "tool_arguments"]
_STREAM_WHERE: tuple[StreamWhere, ...] = ("output", "reasoning", "tool_arguments")


class LoopsSection(Strict):
    """Repetition-loop detection on streamed output and reasoning (see ``gateway/guardrails/loops.py``).

    Exact loops: a unit repeated at least ``min_repeats`` times back to back. Units up to
    ``max_period_chars`` are found character by character (哈哈哈, "the the the", a sentence); longer
    units are found line by line (a block of up to ``max_period_lines`` lines or sentences).
    Near-duplicate loops: the same lines or sentences recurring with only digits, punctuation or case
    changed (counters), over at least ``near_dup_min_repeats`` units.
    Similar loops (``gateway/guardrails/loop_similar.py``): paragraphs or sentences of up to
    ``similar_max_unit_chars`` recurring paraphrased (a few words and numbers changed), compared by
    the Jaccard similarity of their word (English) or character (Chinese) bigrams.
    """

    enabled: bool = True
    rule_id: RuleId = "loop.repetition"
    mode: Mode = "enforce"
    where: list[StreamWhere] = Field(default_factory=lambda: list(_STREAM_WHERE))
    min_repeats: int = Field(4, ge=2, description="Copies of a unit back to back that make an exact loop.")
    max_period_chars: int = Field(
        256, ge=1, le=4096, description="Longest unit found character by character (longer: by lines)."
    )
    max_period_lines: int = Field(
        128, ge=1, le=1024, description="Longest unit found line by line, in lines or sentences."
    )
    min_loop_chars: int = Field(
        80, ge=1, description="Shortest repeated span (all copies) that counts as a loop, in characters."
    )
    min_symbol_loop_chars: int = Field(
        512,
        ge=1,
        description="The same for units without letters: separators, digits, whitespace, emoji.",
    )
    near_dup_ratio: float = Field(
        0.8, gt=0, le=1, description="Share of characters in lines matching the line one unit back."
    )
    near_dup_min_repeats: int = Field(6, ge=2, description="Copies of a unit making a near-duplicate loop.")
    near_dup_min_unit_chars: int = Field(
        80, ge=1, description="Shorter units (table rows, list items, code lines) are never near-duplicates."
    )
    near_dup_min_letter_share: float = Field(
        0.6, ge=0, le=1, description="Letters among non-space characters: keeps data (JSON, CSV) out."
    )
    similar_enabled: bool = Field(True, description="Detect paraphrased loops by unit similarity.")
    similar_threshold: float = Field(
        0.4,
        gt=0,
        le=1,
        description="Jaccard similarity of two units' bigram sketches that makes them copies.",
    )
    similar_certain: float = Field(
        0.65,
        gt=0,
        le=1,
        description="Chains of copies at least this similar are loops one copy earlier (at the third).",
    )
    similar_min_repeats: int = Field(4, ge=3, description="Similar copies of a unit that make a loop.")
    similar_min_unit_tokens: int = Field(
        20, ge=2, description="Words or CJK characters a unit needs to be compared (shorter: list items)."
    )
    similar_max_unit_chars: int = Field(
        2000, ge=100, le=8192, description="Longest unit; text without a break is cut at this length."
    )
    engine_backstop: EngineRepetitionDetection | None = None

    @model_validator(mode="after")
    def _similarity_ordered(self) -> LoopsSection:
        if self.similar_certain < self.similar_threshold:
            raise ValueError("similar_certain must not be below similar_threshold")
        return self


# --- generation.yaml ---------------------------------------------------------------------------


class Sampling(Strict):
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)


class GenerationSection(Strict):
    max_tokens_cap: int = Field(
        4096, ge=1, description="Upper bound on max_tokens; larger requests are capped."
    )
    default_max_tokens: int = Field(1024, ge=1, description="max_tokens when the client sends none.")
    context_cap: int = Field(16384, ge=1, description="Estimated prompt plus max_tokens may not exceed this.")
    thinking: Sampling = Sampling(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0)
    non_thinking: Sampling = Sampling(temperature=0.7, top_p=0.8, top_k=20)
    refuse_greedy: bool = Field(False, description="Refuse temperature 0 (greedy decoding loops more).")
    # Schemas are compiled into grammars by the engine before the first token: bound what a client may send.
    max_tools: int = Field(64, ge=0, le=128, description="Most tools one request may define (400 past it).")
    max_tool_schema_bytes: int = Field(
        65536, ge=1, description="Most bytes of all tool definitions of a request, as compact JSON."
    )
    max_response_schema_bytes: int = Field(
        65536, ge=1, description="Most bytes of a response_format json_schema, as compact JSON."
    )
    max_schema_depth: int = Field(
        32, ge=1, le=256, description="Deepest nesting of a tool's parameters or of the response schema."
    )
    max_tool_calls: int = Field(
        16,
        ge=1,
        le=128,
        description="Most tool calls in one answer; the next one ends the stream with finish_reason length.",
    )


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
