"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NB201_CSV = REPO.parent / "shared" / "data" / "nb201" / "nb201_benchmark.csv"


@pytest.fixture(scope="session", autouse=True)
def _artifact_cache(tmp_path_factory):
    """Exports go to a per-session cache, never the user's ~/.cache."""
    old = os.environ.get("HWNAS_CACHE")
    os.environ["HWNAS_CACHE"] = str(tmp_path_factory.mktemp("hwnas-cache"))
    # The shared test machine is never quiet: CLI tests record interference instead of
    # waiting for it, and skip the canary unless a test asks for one (tests/test_canary.py).
    os.environ.setdefault("HWNAS_INTERFERENCE", "warn")
    os.environ.setdefault("HWNAS_CANARY", "none")
    yield
    if old is None:
        os.environ.pop("HWNAS_CACHE", None)
    else:
        os.environ["HWNAS_CACHE"] = old


@pytest.fixture(scope="session")
def nb201_csv() -> Path:
    """The shared NAS-Bench-201 table; tests that need it skip where it is absent."""
    if not NB201_CSV.exists():
        pytest.skip(f"shared NB201 table not found at {NB201_CSV}")
    return NB201_CSV
