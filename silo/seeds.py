"""Seeds for each purpose of a run, derived from its seed: one function, used everywhere.

The run's seed fixes its initial weights; hashing it with a purpose label (data order, the
validation split, reinitialisation) gives each purpose its own random stream, so no two
purposes draw from the same numbers.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed (torch's manual_seed range) for one purpose of one run."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
