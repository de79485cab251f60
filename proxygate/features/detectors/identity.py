"""ssn, passport, name and address."""

from __future__ import annotations

import re
from collections.abc import Iterator

from proxygate.features.detectors.name_lists import AMBIGUOUS_FIRST_NAMES, FIRST_NAMES, LAST_NAMES, NOT_NAMES

# The boundary check comes after the first digit: a pattern that starts with a character
# class lets the regex engine skip ahead instead of trying the lookbehind at every position.
_SSN = re.compile(r"\d(?<![\w.-]\d)\d\d-\d\d-\d{4}(?![\w-]|\.\d)")
_SSN_CONTEXT = re.compile(
    r"(?i:\bssn|social[ _-]security(?:[ _-]number)?)\b[\"']?\s*(?:no\.?|number|#)?\s*[:=#]?\s*[\"']?"
    r"(\d{3}[- ]?\d{2}[- ]?\d{4})(?![\w-])"
)


def _ssn_ok(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def ssns(text: str) -> Iterator[tuple[int, int]]:
    seen: set[int] = set()
    for match in _SSN.finditer(text):
        if _ssn_ok(match.group().replace("-", "")):
            seen.add(match.start())
            yield match.span()
    lowered = text.lower()
    if "ssn" not in lowered and "social" not in lowered:
        return
    for match in _SSN_CONTEXT.finditer(text):
        if match.start(1) not in seen and _ssn_ok(re.sub(r"[- ]", "", match.group(1))):
            yield match.span(1)


_PASSPORT = re.compile(
    r"(?i:passport|travel[ _-]document)(?i:[ _-]?(?:no\.?|number|num|#|id))?"
    r"[\"']?\s*(?:is|[:=#])?\s*[\"']?"
    r"(?-i:([A-Z]{1,2}\d{6,8}|\d{9}|C[A-Z0-9]{8}|\d{2}[A-Z]{2}\d{5}))(?![\w-])"
)


def passports(text: str) -> Iterator[tuple[int, int]]:
    lowered = text.lower()
    if "passport" not in lowered and "travel" not in lowered:
        return
    for match in _PASSPORT.finditer(text):
        yield match.span(1)


_STREET_SUFFIX = (
    "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Drive|Dr|Lane|Ln|Court|Ct|Way|Place|Pl|"
    "Terrace|Ter|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Strasse|Straße"
)
_ADDRESS = re.compile(
    r"\d(?<![\w.#/:-]\d)\d{0,5}[A-Za-z]?\s+"  # house number
    r"(?:(?:N|S|E|W|North|South|East|West)\.?\s+)?"
    r"(?:[A-Z][a-z']+\.?\s+){1,3}"  # street name, capitalised
    rf"(?:{_STREET_SUFFIX})\b\.?"
    r"(?:,?\s+(?:Apt|Suite|Unit|#)\.?\s*\w{1,6})?"
    r"(?:,\s+[A-Z][a-z]+(?:\s[A-Z][a-z]+)?(?:,\s+[A-Z]{2})?(?:\s+\d{5}(?:-\d{4})?)?)?"
)


def addresses(text: str) -> Iterator[tuple[int, int]]:
    for match in _ADDRESS.finditer(text):
        yield match.span()


_PAIR = re.compile(
    r"(?<![\w.@/$#-])([A-Z][a-z]{1,15})[ ]([A-Z][a-z]{1,19}(?:-[A-Z][a-z]{1,19})?)(?![\w(@/-]|\.\w|[ ][A-Z])"
)
# Every capitalised word followed by another: the candidates' first names (a few per page).
_CANDIDATE = re.compile(r"[A-Z](?<![\w.@/$#-][A-Z])[a-z]{1,15}(?=[ ][A-Z])")
_CONTEXT_BEFORE = re.compile(
    r"(?i:\b(?:author|authors|name|full[ _]?name|display[ _]?name|by|from|contact|owner|assignee|"
    r"reviewer|maintainer|committer|signed-off-by|co-authored-by|reported-by|reviewed-by|"
    r"acked-by|tested-by|cc|dear|hi|hello|thanks|regards))"
    r"[\"']?\s*[:=,]?\s*[\"']?$"
)
_CONTEXT_NAME = re.compile(r"[A-Z][a-z]{1,15}(?:[ ][A-Z]\.)?(?:[ ][A-Z][a-z'-]{1,19}){1,2}(?![\w(-])")


def _first(word: str, *, with_context: bool) -> bool:
    lower = word.lower()
    return lower in FIRST_NAMES or (with_context and lower in AMBIGUOUS_FIRST_NAMES)


def names(text: str) -> Iterator[tuple[int, int]]:
    end = 0
    for candidate in _CANDIDATE.finditer(text):
        start = candidate.start()
        if start < end or not _first(candidate.group(), with_context=True):
            continue
        context = _CONTEXT_NAME.match(text, start)
        if (
            context is not None
            and _CONTEXT_BEFORE.search(text, max(0, start - 40), start)
            and context.group().rsplit(" ", 1)[-1].lower() not in NOT_NAMES
        ):
            end = context.end()
            yield context.span()
            continue
        pair = _PAIR.match(text, start)
        if pair is None:
            continue
        first, last = pair.group(1), pair.group(2)
        if _first(first, with_context=False) and last.lower() in LAST_NAMES and last.lower() not in NOT_NAMES:
            end = pair.end()
            yield pair.span()
