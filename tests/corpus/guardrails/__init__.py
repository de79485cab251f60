"""The guardrails detector corpus: per detector, positives with their values marked, and
tricky negatives (code, lockfiles, logs, diffs) that must come out untouched."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
OPEN, CLOSE = "⟦", "⟧"


@dataclass(frozen=True)
class Case:
    detector: str
    text: str
    values: tuple[tuple[int, int], ...]
    "Spans of the values to replace (empty: a negative)."
    line: int

    @property
    def is_positive(self) -> bool:
        return bool(self.values)


def parse(detector: str, raw: str, line: int) -> Case:
    text, spans, at = [], [], 0
    raw = raw.replace("\\n", "\n")
    i = 0
    start = 0
    while i < len(raw):
        ch = raw[i]
        if ch == OPEN:
            start = at
        elif ch == CLOSE:
            spans.append((start, at))
        else:
            text.append(ch)
            at += 1
        i += 1
    return Case(detector, "".join(text), tuple(spans), line)


def load(detector: str) -> list[Case]:
    cases = []
    for n, line in enumerate((HERE / f"{detector}.txt").read_text().splitlines(), 1):
        if line.startswith(("+ ", "- ")):
            case = parse(detector, line[2:], n)
            if line[0] == "+" and not case.values:
                raise ValueError(f"{detector}.txt:{n}: a positive without a marked value")
            cases.append(case)
    return cases


def all_cases() -> list[Case]:
    return [case for path in sorted(HERE.glob("*.txt")) for case in load(path.stem)]
