from __future__ import annotations

import pytest

from gateway.guardrails import cn_resident_id, luhn


@pytest.mark.parametrize(
    "number", ["4111111111111111", "4111 1111 1111 1111", "6222-0212-3456-7890-128", "7992739871300008"]
)
def test_luhn_accepts_valid_numbers(number: str) -> None:
    assert luhn(number)


@pytest.mark.parametrize(
    "number", ["4111111111111112", "411111111111111", "12345678901234567890", "4111a11111111111"]
)
def test_luhn_rejects_bad_checksums_and_lengths(number: str) -> None:
    assert not luhn(number)


@pytest.mark.parametrize("number", ["11010519491231002X", "11010519491231002x", "110101199003074477"])
def test_resident_id_accepts_valid_numbers(number: str) -> None:
    assert cn_resident_id(number)


@pytest.mark.parametrize(
    "number",
    [
        "110105194912310021",  # wrong check character
        "110105194913310028",  # month 13
        "11010518000101001X",  # born before 1900
        "11010519491231002",  # 17 characters
    ],
)
def test_resident_id_rejects_invalid_numbers(number: str) -> None:
    assert not cn_resident_id(number)
