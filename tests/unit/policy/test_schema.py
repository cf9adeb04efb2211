"""policies/schema.json is generated from the model and committed; it must not go stale."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.policy.schema import bundle_schema, default_schema_path, main, render_schema

REPO = Path(__file__).resolve().parents[3]


def test_committed_schema_is_up_to_date() -> None:
    committed = (REPO / "policies" / "schema.json").read_text(encoding="utf-8")
    assert committed == render_schema(), "run: python -m gateway.policy.schema"


def test_schema_has_every_section_and_no_loader_fields() -> None:
    schema = bundle_schema()
    properties = schema["properties"]
    assert isinstance(properties, dict)
    assert set(properties) == {"clients", "limits", "guardrails", "loops", "generation", "audit"}
    assert schema["additionalProperties"] is False
    assert default_schema_path() == REPO / "policies" / "schema.json"


def test_main_writes_schema(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    assert main([str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(render_schema())
