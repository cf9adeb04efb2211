"""JSON Schema of a policy bundle, for editors and CI: ``python -m gateway.policy.schema [OUT]``.

Each section file validates against ``#/properties/<section>`` (e.g. ``limits.yaml`` against
``#/properties/limits``). The loader-filled ``word_lists`` is not part of any file, so it is left out.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.policy.sections import PolicyBundle

SCHEMA_ID = "https://menshen.invalid/policies/schema.json"


def default_schema_path() -> Path:
    """``policies/schema.json`` at the root of the source tree."""
    return Path(__file__).resolve().parents[2] / "policies" / "schema.json"


def bundle_schema() -> dict[str, object]:
    schema = PolicyBundle.model_json_schema()
    properties = schema.get("properties")
    if isinstance(properties, dict):
        properties.pop("word_lists", None)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def render_schema() -> str:
    """The schema as committed: stable key order, UTF-8, trailing newline."""
    return json.dumps(bundle_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out = Path(args[0]) if args else default_schema_path()
    out.write_text(render_schema(), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
