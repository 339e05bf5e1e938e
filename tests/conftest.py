"""Shared test settings: hypothesis profiles (CI runs the byte fuzzers with 10,000 examples)."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=10_000, deadline=None, database=None)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
