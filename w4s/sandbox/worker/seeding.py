"""Seeding `random` per job, for items, programs and solutions alike."""

from __future__ import annotations


def seed_random(*parts: str) -> None:
    """Seed `random` from the job's content: reruns, and any worker, draw the same numbers.
    (A str seed is hashed by `random` itself, with SHA-512: no hashlib object per job.)"""
    import random

    random.seed("\0".join(parts))
