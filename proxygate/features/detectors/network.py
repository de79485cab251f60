"""ip_address: global IPv4 and IPv6 addresses.

By default loopback, private, shared, link-local, documentation and unspecified addresses
(``0.0.0.0``) are left alone (they say nothing about anyone), and so is a dotted quad after a
version word (``version 1.2.3.4``, ``v1.2.3.4``, ``==1.2.3.4``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

_IPV4 = re.compile(r"\d(?<![\w.-]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w-]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.-])((?:[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{0,4}){2,7}(?:%[\w.]+)?)(?![\w:.-])")
_VERSION_BEFORE = re.compile(
    r"(?:(?<![A-Za-z])(?:version|ver|release|v)[\"']?|==|>=|<=|~=|!=|\^|~)\s*[:=]?\s*[\"']?$", re.IGNORECASE
)


def _is_quiet(address: ipaddress.IPv4Address | ipaddress.IPv6Address, loopback: bool, private: bool) -> bool:
    """An address that is not replaced under these options."""
    if address.is_loopback:
        return not loopback
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return True
    if not address.is_global:  # private, shared, link-local, documentation
        return not private
    return False


def ip_addresses(
    text: str, *, loopback: bool = False, private: bool = False, version_like: bool = False
) -> Iterator[tuple[int, int]]:
    if "." in text:
        for match in _IPV4.finditer(text):
            start = match.start()
            try:
                v4 = ipaddress.IPv4Address(match.group())  # octets over 255, leading zeros: no
            except ValueError:
                continue
            if not version_like and _VERSION_BEFORE.search(text, max(0, start - 12), start):
                continue
            if not _is_quiet(v4, loopback, private):
                yield match.span()
    if "::" in text or text.count(":") >= 7:
        for match in _IPV6.finditer(text):
            value = match.group(1)
            if value.count(":") < 2 or (value.count(":") < 7 and "::" not in value):
                continue
            try:
                address = ipaddress.IPv6Address(value.split("%")[0])
            except ValueError:
                continue
            groups = [g for g in value.split("%")[0].split(":") if g]
            if len(groups) < 3 and not loopback:  # abc::def, a C++ scope: too little to be an address
                continue
            if not _is_quiet(address, loopback, private):
                yield match.span(1)
