"""credit_card (Luhn, brand prefixes) and iban (mod 97)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from stdnum import iban as stdnum_iban

# 13-19 digits, as one run or in groups split by one kind of separator.
# Boundary checks follow the first character, so the engine can skip ahead to candidates
# instead of trying a lookbehind at every position of a 20 KB prompt.
_CARD = re.compile(
    r"\d(?<![\w.+/-]\d)(?:\d{3}([ -]?)\d{4}\1\d{4}\1\d{1,7}|\d{3}([ -]?)\d{6}\2\d{5})(?![\w-]|\.\d)"
)
_BRANDS = re.compile(
    r"4\d{12}(?:\d{3}){0,2}"  # Visa: 13, 16 or 19
    r"|(?:5[1-5]\d{2}|222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)\d{12}"  # Mastercard
    r"|3[47]\d{13}"  # Amex
    r"|(?:6011|64[4-9]\d|65\d{2})\d{12}(?:\d{3})?"  # Discover
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def credit_cards(text: str) -> Iterator[tuple[int, int]]:
    for match in _CARD.finditer(text):
        digits = match.group().replace(" ", "").replace("-", "")
        if _BRANDS.fullmatch(digits) and luhn_ok(digits) and len(set(digits)) > 1:
            yield match.span()


_IBAN = re.compile(r"[A-Z](?<![\w-][A-Z])[A-Z]\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?(?![\w-])")


def ibans(text: str) -> Iterator[tuple[int, int]]:
    for match in _IBAN.finditer(text):
        if stdnum_iban.is_valid(match.group()):
            yield match.span()
