"""Checksum validators that confirm a pattern match before it counts as personal data."""

from __future__ import annotations

import datetime
from collections.abc import Callable

# GB 11643-1999: weights 2^(17-i) mod 11 and the check character for each remainder
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def _alnum(text: str) -> str:
    """The match without its separators (cards are often written ``6222 0212 …``)."""
    return "".join(c for c in text if c.isascii() and c.isalnum())


def luhn(text: str) -> bool:
    """Bank card: 16 to 19 digits with a valid Luhn check digit."""
    digits = _alnum(text)
    if not digits.isdigit() or not 16 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def cn_resident_id(text: str) -> bool:
    """Mainland resident identity number: 18 characters, a real birth date, GB 11643 check character."""
    code = _alnum(text).upper()
    if len(code) != 18 or not code[:17].isdigit():
        return False
    try:
        born = datetime.date(int(code[6:10]), int(code[10:12]), int(code[12:14]))
    except ValueError:
        return False
    if born.year < 1900:
        return False
    total = sum(int(c) * w for c, w in zip(code[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == code[17]


VALIDATORS: dict[str, Callable[[str], bool]] = {"luhn": luhn, "cn_resident_id": cn_resident_id}

__all__ = ["VALIDATORS", "cn_resident_id", "luhn"]
