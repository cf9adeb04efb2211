"""docs/configuration.md documents every setting: each option's flag and ``GATEWAY_*`` variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import OPTIONS, Settings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("option", OPTIONS, ids=lambda opt: opt.name)
def test_every_option_is_documented(option: object) -> None:
    assert option.flag in DOC
    assert option.env in DOC


def test_every_settings_field_is_an_option() -> None:
    """A field added to a section becomes an option (and so needs documenting): nothing is hidden."""
    placed = {(opt.section, opt.field) for opt in OPTIONS}
    for name, info in Settings.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and hasattr(section, "model_fields"):
            assert {(name, field) for field in section.model_fields} <= placed
        else:
            assert (None, name) in placed
