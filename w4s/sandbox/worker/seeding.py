"""Seeding `random` per job, for items, programs and solutions alike."""

from __future__ import annotations


def seed_random(*parts: str) -> None:
    """Seed `random` from the job's content: reruns, and any worker, draw the same numbers."""
    import hashlib
    import random

    random.seed(hashlib.sha256("\0".join(parts).encode()).digest())
