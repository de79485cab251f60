"""Every corpus case, asserted: a positive's marked values and nothing else are found by its
detector; a negative comes out of the whole scan (all detectors) with nothing found."""

from __future__ import annotations

import pytest

from proxygate.features.detectors import NAMES, scan
from tests.corpus.guardrails import Case, all_cases, load

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.detector}:{c.line}")
def test_case(case: Case) -> None:
    if case.is_positive:
        found = [(f.start, f.end) for f in scan(case.text, [case.detector])]
        assert found == list(case.values), [case.text[s:e] for s, e in found]
        # With every detector on, each marked value is still replaced whole (by someone).
        everything = scan(case.text, NAMES)
        for start, end in case.values:
            assert any(f.start <= start and f.end >= end for f in everything), case.text[start:end]
    else:
        found = scan(case.text, NAMES)
        assert found == [], [(f.detector, case.text[f.start : f.end]) for f in found]


@pytest.mark.parametrize("detector", NAMES)
def test_corpus_has_twenty_of_each(detector: str) -> None:
    cases = load(detector)
    assert sum(c.is_positive for c in cases) >= 20
    assert sum(not c.is_positive for c in cases) >= 20
