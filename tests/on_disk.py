"""What a user's ``grep -r`` would find of a secret in the files under a directory."""

from __future__ import annotations

from pathlib import Path

TAIL_CHARS = 16
"How much of a secret counts as found: its last 16 characters (a masked tail shows fewer)."


def clear_text_under(root: Path, *secrets: str) -> list[str]:
    """One ``<path>: …<tail>`` per file and secret whose last 16 characters are in that file."""
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: …{s[-TAIL_CHARS:]}" for s in secrets if s[-TAIL_CHARS:].encode() in data]
    return found
