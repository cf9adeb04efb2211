"""Guardrails: input checks, the stream pipeline, the sensitive-word and pattern matcher, the normaliser."""

from gateway.guardrails.compiled import (
    CompiledGuardrails,
    GuardrailsCompileError,
    RuleInfo,
    RuleView,
    compile_guardrails,
)
from gateway.guardrails.loop_check import (
    LoopCheck,
    effective_loops,
    loop_check_for,
    loop_decision,
    loop_stop,
    repetition_detection_params,
)
from gateway.guardrails.loops import LoopDetector, LoopHit, find_loop
from gateway.guardrails.normalize import Normalized, Normalizer
from gateway.guardrails.pipeline import (
    CheckResult,
    Decision,
    DeltaField,
    PassThrough,
    Stop,
    StreamCheck,
    StreamPipeline,
)
from gateway.guardrails.scanner import FieldScanner, GuardrailStream, mask_spans
from gateway.guardrails.validators import cn_resident_id, luhn
from gateway.guardrails.verdict import Verdict, VerdictAction, strongest

__all__ = [
    "CheckResult",
    "CompiledGuardrails",
    "Decision",
    "DeltaField",
    "FieldScanner",
    "GuardrailStream",
    "GuardrailsCompileError",
    "LoopCheck",
    "LoopDetector",
    "LoopHit",
    "Normalized",
    "Normalizer",
    "PassThrough",
    "RuleInfo",
    "RuleView",
    "Stop",
    "StreamCheck",
    "StreamPipeline",
    "Verdict",
    "VerdictAction",
    "cn_resident_id",
    "compile_guardrails",
    "effective_loops",
    "find_loop",
    "loop_check_for",
    "loop_decision",
    "loop_stop",
    "luhn",
    "mask_spans",
    "repetition_detection_params",
    "strongest",
]
