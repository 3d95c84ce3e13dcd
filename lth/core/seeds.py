"""Named random streams derived from the one ``seed`` a user sets (init, data order, controls...)."""

from __future__ import annotations

import hashlib


def stream(seed: int, name: str) -> int:
    """A seed for the stream ``name``: stable across runs and platforms, different for each name."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
