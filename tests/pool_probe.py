"""A job for a pool's workers that imports nothing itself: what a worker had loaded before it
was handed any work (the test module a job comes from imports the toolkit)."""

from __future__ import annotations

import sys


def loaded(module: str) -> bool:
    return module in sys.modules
