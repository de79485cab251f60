"""Detectors of secrets and personal data in text (issue 13): pure functions, no I/O.

Each detector family lives in its own module and yields ``(start, end)`` spans of the value
to replace, never its context: ``PGPASSWORD=`` and a key block's BEGIN/END lines stay.
``scan`` runs the enabled detectors over one string and returns non-overlapping findings.

Precision comes first: the text is source code, so each detector matches a narrow shape and
then checks it (Luhn, mod 97, phonenumbers, a decodable JWT header, global IP ranges, name
lists with context). Git SHAs, UUIDs, base64 blobs, lockfile hashes, versions and identifiers
must come out untouched (tests/unit/features/detectors/ holds the corpus of both).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proxygate.features.detectors.contact import emails, phones
from proxygate.features.detectors.credentials import passwords, url_credentials
from proxygate.features.detectors.finance import credit_cards, ibans
from proxygate.features.detectors.identity import addresses, names, passports, ssns
from proxygate.features.detectors.keys import api_keys, aws_keys, jwts, private_keys
from proxygate.features.detectors.network import ip_addresses

Span = tuple[int, int]
Find = Callable[[str, "ScanOptions"], Iterable[Span]]


@dataclass(frozen=True, slots=True)
class ScanOptions:
    ip_loopback: bool = False
    ip_private: bool = False
    ip_version_like: bool = False


@dataclass(frozen=True, slots=True)
class Finding:
    start: int
    end: int
    detector: str


# In priority order: where two findings overlap, the earlier detector wins (a key block
# before the JWT-looking text inside it, a URL's password before the email-looking rest).
DETECTORS: dict[str, Find] = {
    "private_key": lambda text, _o: private_keys(text),
    "url_credentials": lambda text, _o: url_credentials(text),
    "jwt": lambda text, _o: jwts(text),
    "aws_key": lambda text, _o: aws_keys(text),
    "api_key": lambda text, _o: api_keys(text),
    "password": lambda text, _o: passwords(text),
    "email": lambda text, _o: emails(text),
    "credit_card": lambda text, _o: credit_cards(text),
    "iban": lambda text, _o: ibans(text),
    "ssn": lambda text, _o: ssns(text),
    "passport": lambda text, _o: passports(text),
    "phone": lambda text, _o: phones(text),
    "ip_address": lambda text, o: ip_addresses(
        text, loopback=o.ip_loopback, private=o.ip_private, version_like=o.ip_version_like
    ),
    "address": lambda text, _o: addresses(text),
    "name": lambda text, _o: names(text),
}
NAMES = tuple(DETECTORS)
PRIORITY = {name: i for i, name in enumerate(NAMES)}


@dataclass(frozen=True, slots=True)
class Allow:
    """Values never replaced: literals, and ``re:PATTERN`` regexes matching the whole value."""

    literals: frozenset[str] = frozenset()
    patterns: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allow:
        literals, patterns = set(), []
        for entry in entries:
            if entry.startswith("re:"):
                patterns.append(re.compile(entry[3:]))
            else:
                literals.add(entry)
        return cls(frozenset(literals), tuple(patterns))

    def allows(self, value: str) -> bool:
        return value in self.literals or any(p.fullmatch(value) for p in self.patterns)


# Detectors that first look for a cheap trigger ("@", "://", "eyJ", "PRIVATE KEY", a password
# word, …) and usually skip a text at once; the others run their regexes over every text.
TRIGGERED = frozenset({"private_key", "url_credentials", "jwt", "aws_key", "password", "email", "passport"})


def find(
    text: str, enabled: Iterable[str], options: ScanOptions = ScanOptions(), allow: Allow = Allow()
) -> list[Finding]:
    """Every finding in ``text``, overlapping ones included (``resolve`` picks)."""
    found: list[Finding] = []
    for name in enabled:
        for start, end in DETECTORS[name](text, options):
            if end > start and not allow.allows(text[start:end]):
                found.append(Finding(start, end, name))
    return found


def scan(
    text: str, enabled: Iterable[str], options: ScanOptions = ScanOptions(), allow: Allow = Allow()
) -> list[Finding]:
    """Non-overlapping findings in ``text``, in order of position."""
    return resolve(find(text, enabled, options, allow))


def resolve(found: list[Finding]) -> list[Finding]:
    """Where findings overlap, the detector earlier in ``DETECTORS`` wins; sorted by position."""
    if len(found) < 2:
        return found
    found.sort(key=lambda f: (PRIORITY[f.detector], f.start))
    kept: list[Finding] = []
    for finding in found:
        if all(finding.end <= k.start or finding.start >= k.end for k in kept):
            kept.append(finding)
    kept.sort(key=lambda f: f.start)
    return kept


__all__ = ["DETECTORS", "NAMES", "TRIGGERED", "Allow", "Finding", "ScanOptions", "find", "resolve", "scan"]
