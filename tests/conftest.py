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


@pytest.fixture(scope="session")
def ray_cluster(_artifact_cache):
    """One local Ray cluster for the session (tests/test_ray.py, tests/test_ray_trust.py)."""
    ray = pytest.importorskip("ray")
    env = {
        "RAY_AUTH_MODE": "disabled",  # token auth would write ~/.ray/auth_token
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
        "RAY_worker_niceness": "0",  # as hwnas's own local clusters (Ray's default is 15)
        # workers unpickle the test spaces from tests/ (campaign_helpers, this module)
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2,
            resources={"bench:a": 1, "bench:b": 1, "device:cpu-ort": 1},
            include_dashboard=False,
            object_store_memory=150 * 1024 * 1024,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    if started:
        ray.shutdown()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
