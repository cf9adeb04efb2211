"""LoopCheck as a stream check: the cut, the stop, shadow mode, per-field state, per-client overrides."""

from __future__ import annotations

import pytest
from openai.types.chat import ChatCompletionChunk
from pydantic import ValidationError

from gateway.guardrails.loop_check import (
    LOOP_STOP_REASON,
    LoopCheck,
    effective_loops,
    engine_repetition_stop,
    loop_check_for,
    repetition_detection_params,
)
from gateway.guardrails.loops import find_loop
from gateway.guardrails.pipeline import CheckResult, DeltaField, PassThrough, StreamPipeline
from gateway.policy.sections import (
    ClientPolicy,
    ClientsSection,
    EngineRepetitionDetection,
    LoopOverride,
    LoopsSection,
    PolicyBundle,
)

LOOPING = "Okay, the user wants a summary. " + "I need to make sure the summary is accurate. " * 40
CLEAN = "The summary: revenue grew 12% while costs fell; the outlook is stable for next year. " * 2


def chunks(text: str, size: int = 3) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def run(check: LoopCheck, where: DeltaField, text: str) -> tuple[str, list[CheckResult]]:
    released: list[str] = []
    results: list[CheckResult] = []
    for piece in chunks(text):
        result = check.feed(where, piece)
        results.append(result)
        released.append(result.text)
        if result.stop is not None:
            return "".join(released), results
    end = check.finish(where)
    results.append(end)
    released.append(end.text)
    return "".join(released), results


@pytest.mark.parametrize("where", ["content", "reasoning"])
def test_enforce_cuts_where_the_loop_became_certain(where: DeltaField) -> None:
    section = LoopsSection()
    released, results = run(LoopCheck(section), where, LOOPING)
    hit = find_loop(LOOPING, section)
    assert hit is not None
    assert released == LOOPING[: hit.offset]  # the same cut a non-streamed response gets
    last = results[-1]
    assert last.stop is not None
    assert last.stop.finish_reason == "length"
    label = "output" if where == "content" else "reasoning"
    assert last.stop.extension == {
        "stopped": LOOP_STOP_REASON,
        "rule": section.rule_id,
        "where": label,
        "period": hit.period,
        "repeats": hit.repeats,
        "offset": hit.offset,
        "kind": hit.kind,
    }
    decisions = [d for r in results for d in r.decisions or []]
    assert len(decisions) == 1
    d = decisions[0]
    assert (d.rule, d.category, d.action, d.mode, d.where) == (
        section.rule_id,
        "loop",
        "block",
        "enforce",
        label,
    )
    assert (d.start, d.end) == (hit.start, hit.offset)
    assert dict(d.detail)["period"] == hit.period
    assert dict(d.detail)["repeats"] == hit.repeats
    assert d.matched == ""  # never the text
    assert all(not isinstance(v, str) or v in ("exact", "near_dup", "similar") for _, v in d.detail)


def test_clean_text_passes_untouched() -> None:
    released, results = run(LoopCheck(LoopsSection()), "content", CLEAN)
    assert released == CLEAN
    assert all(r.stop is None and not r.decisions for r in results)


def test_shadow_records_once_and_keeps_relaying() -> None:
    check = LoopCheck(LoopsSection(mode="shadow"))
    released, results = run(check, "reasoning", LOOPING)
    assert released == LOOPING
    assert all(r.stop is None for r in results)
    decisions = [d for r in results for d in r.decisions or []]
    assert len(decisions) == 1
    assert decisions[0].mode == "shadow"
    again, later = run(check, "content", LOOPING)  # the other field: already recorded for this stream
    assert again == LOOPING
    assert not any(r.decisions for r in later)


def test_fields_keep_separate_state() -> None:
    check = LoopCheck(LoopsSection())
    unit = "I need to make sure the summary is accurate. "
    for _ in range(3):  # three copies in each field: six in the stream, but never four in one field
        for where in ("reasoning", "content"):
            result = check.feed(where, unit)
            assert result.stop is None
            assert result.text == unit
    stopped = [check.feed("content", unit) for _ in range(2)]
    assert any(r.stop is not None for r in stopped)


def test_where_limits_the_fields_checked() -> None:
    check = LoopCheck(LoopsSection(where=["reasoning"]))
    released, results = run(check, "content", LOOPING)
    assert released == LOOPING
    assert all(r.stop is None for r in results)
    _, results = run(check, "reasoning", LOOPING)
    assert results[-1].stop is not None


def test_stop_at_finish_when_the_last_line_completes_a_block() -> None:
    block = "First line of the block here.\nSecond line of the block here\n"
    text = block * 3 + block.rstrip("\n")  # the fourth copy ends only when the field ends
    check = LoopCheck(LoopsSection(max_period_chars=8))  # only the line detector can see the block
    released, results = run(check, "content", text)
    assert released == text
    assert results[-1].stop is not None
    assert results[-1].text == ""


def test_pipeline_stops_and_records() -> None:
    pipeline = StreamPipeline([PassThrough(), LoopCheck(LoopsSection())])
    out = []
    for piece in chunks(LOOPING, 5):
        result = pipeline.feed("content", piece)
        out.append(result.text)
        if result.stop is not None:
            break
    assert pipeline.stopped is not None
    assert pipeline.stopped.extension["stopped"] == LOOP_STOP_REASON
    assert len(pipeline.decisions) == 1
    hit = find_loop(LOOPING, LoopsSection())
    assert hit is not None
    assert "".join(out) == LOOPING[: hit.offset]


def test_final_chunk_with_the_extension_parses_in_the_openai_sdk() -> None:
    stop = LoopCheck(LoopsSection())
    _, results = run(stop, "content", LOOPING)
    assert results[-1].stop is not None
    chunk = ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "qwen3-8b",
            "choices": [{"index": 0, "delta": {}, "finish_reason": results[-1].stop.finish_reason}],
            "menshen": results[-1].stop.extension,
        }
    )
    assert chunk.choices[0].finish_reason == "length"
    assert (chunk.model_extra or {})["menshen"]["stopped"] == LOOP_STOP_REASON


# --- per-client overrides and policy helpers ------------------------------------------------------


def bundle(override: LoopOverride | None, loops: LoopsSection | None = None) -> PolicyBundle:
    clients = ClientsSection(clients={"app": ClientPolicy(tier="free", loops=override)})
    return PolicyBundle(clients=clients, loops=loops or LoopsSection())


def test_effective_loops_merges_only_set_fields() -> None:
    section = LoopsSection(min_loop_chars=100)
    assert effective_loops(section, None) is section
    assert effective_loops(section, LoopOverride()) is section
    merged = effective_loops(section, LoopOverride(min_repeats=6, mode="shadow"))
    assert (merged.min_repeats, merged.mode, merged.min_loop_chars) == (6, "shadow", 100)
    assert section.min_repeats == 4  # the bundle is unchanged


def test_loop_check_for_applies_the_client_override() -> None:
    assert loop_check_for(bundle(LoopOverride(enabled=False)), "app") is None
    assert loop_check_for(bundle(None, LoopsSection(enabled=False)), "app") is None
    assert loop_check_for(bundle(LoopOverride(enabled=True), LoopsSection(enabled=False)), "app") is not None
    assert loop_check_for(bundle(None), "someone-else") is not None

    unit = "I need to make sure the summary is accurate. "
    strict = loop_check_for(bundle(None), "app")
    lenient = loop_check_for(bundle(LoopOverride(min_repeats=8)), "app")
    assert strict is not None
    assert lenient is not None
    cut_strict, _ = run(strict, "content", unit * 20)
    cut_lenient, _ = run(lenient, "content", unit * 20)
    assert cut_strict.count(unit) == 4 - 1
    assert cut_lenient.count(unit) == 8 - 1

    shadow = loop_check_for(bundle(LoopOverride(mode="shadow")), "app")
    assert shadow is not None
    released, results = run(shadow, "content", unit * 20)
    assert released == unit * 20
    assert any(r.decisions for r in results)


def test_repetition_detection_params() -> None:
    assert repetition_detection_params(LoopsSection()) is None
    backstop = EngineRepetitionDetection(min_pattern_size=2, max_pattern_size=50, min_count=10)
    assert repetition_detection_params(LoopsSection(engine_backstop=backstop)) == {
        "max_pattern_size": 50,
        "min_pattern_size": 2,
        "min_count": 10,
    }
    assert repetition_detection_params(LoopsSection(engine_backstop=backstop, enabled=False)) is None
    with pytest.raises(ValidationError):
        EngineRepetitionDetection(min_pattern_size=10, max_pattern_size=5)


def test_policy_rejects_unknown_and_out_of_range_loop_settings() -> None:
    with pytest.raises(ValidationError):
        LoopsSection.model_validate({"near_dup_window": 1024})
    with pytest.raises(ValidationError):
        LoopOverride.model_validate({"min_repeats": 1})


def test_engine_repetition_maps_to_the_same_documented_finish() -> None:
    stop = engine_repetition_stop(LoopsSection(rule_id="loop.custom"))
    assert stop.finish_reason == "length"
    assert stop.extension == {"stopped": LOOP_STOP_REASON, "rule": "loop.custom", "source": "engine"}
