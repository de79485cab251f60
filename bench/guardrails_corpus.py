"""Precision and recall of each guardrails detector over the corpus (tests/corpus/guardrails/).

Per detector, with that detector alone: a marked value found exactly is a true positive, a
marked value not found a false negative, and anything found that is not a marked value (in
a positive's context or in a negative) a false positive. Negatives are also scanned with
every detector on, since any detector that fires there changes the user's code.

    .venv/bin/python bench/guardrails_corpus.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxygate.features.detectors import NAMES, scan  # noqa: E402
from tests.corpus.guardrails import all_cases  # noqa: E402


def main() -> int:
    cases = all_cases()
    negatives = [c for c in cases if not c.is_positive]
    rows = []
    total_tp = total_fp = total_fn = 0
    for detector in NAMES:
        tp = fp = fn = 0
        for case in cases:
            found = {(f.start, f.end) for f in scan(case.text, [detector])}
            expected = set(case.values) if case.detector == detector else set()
            if case.detector != detector and case.is_positive:
                continue  # another detector's positive: its values may be this one's too
            tp += len(found & expected)
            fn += len(expected - found)
            fp += len(found - expected)
        for case in negatives:  # all detectors on: whoever fires on a negative is wrong
            if case.detector != detector:
                fp += sum(1 for f in scan(case.text, NAMES) if f.detector == detector)
        rows.append((detector, tp, fp, fn))
        total_tp, total_fp, total_fn = total_tp + tp, total_fp + fp, total_fn + fn
    print(f"{'detector':<16}{'TP':>5}{'FP':>5}{'FN':>5}{'precision':>11}{'recall':>8}")
    for detector, tp, fp, fn in [*rows, ("all", total_tp, total_fp, total_fn)]:
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        print(f"{detector:<16}{tp:>5}{fp:>5}{fn:>5}{precision:>11.3f}{recall:>8.3f}")
    pos = sum(c.is_positive for c in cases)
    print(f"{len(cases)} cases: {pos} positives, {len(cases) - pos} negatives")
    return 0 if total_fp == 0 and total_fn == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
