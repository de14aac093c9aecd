"""The zoo's latency on this CPU as ``hwnas_latency`` tests: a latency regression suite.

Each model is measured by the hwnas plugin (interleaved with the reference
model) and recorded in pytest-benchmark's JSON, so a saved run is a baseline:

    pytest benchmarks/bench_latency.py --benchmark-only --benchmark-autosave
    pytest benchmarks/bench_latency.py --benchmark-only --benchmark-compare --hwnas-fail-regression 5%
    pytest benchmarks/bench_latency.py --benchmark-only --hwnas-device adb:SERIAL   # on a phone

Run on an otherwise idle machine.
"""

from __future__ import annotations

import pytest

from hwnas.models import list_models


@pytest.mark.parametrize("model", list_models())
def test_zoo_latency(hwnas_latency, model):
    r = hwnas_latency(model, device="cpu-ort", threads=1)
    assert r.measurement.stats.n > 0 and r.measurement.label == model
