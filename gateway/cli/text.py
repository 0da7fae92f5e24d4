"""Small wording helpers for what the commands print."""

from __future__ import annotations


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 device``, ``2 devices``, ``0 things`` (``words``: an irregular plural)."""
    return f"{count} {word if count == 1 else (words or word + 's')}"
