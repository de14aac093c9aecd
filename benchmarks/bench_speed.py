"""pytest-benchmark benchmarks of hwnas' own code: predictor throughput, export time, harness cost.

These time *our* code, so a change that slows the predictor, the exporter or the
measurement loop shows up in ``--benchmark-compare`` like any benchmark:

    pytest benchmarks/bench_speed.py --benchmark-only --benchmark-autosave --benchmark-save-data
    pytest benchmarks/bench_speed.py --benchmark-only --benchmark-compare --benchmark-compare-fail=median:10%

(``make bench`` runs the first.) Throughput figures (archs/s, the issue's
targets) are put in each benchmark's ``extra_info`` and so into the saved JSON.
The scripts printing tables against targets (``predictor_speed.py``,
``harness_overhead.py``) stay as they are; this file is their regression-test
form. Run on an otherwise idle machine.
"""

from __future__ import annotations

import numpy as np
import pytest

#: architectures per predictor call: large enough that per-call overhead is amortised,
#: as in a search step; small enough to keep a round well under a second.
N_ARCHS = 20_000


def _onehot(choices: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Vectorised ``space.encode`` for a matrix of choice indices (as predictor_speed.py)."""
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    X = np.zeros((choices.shape[0], sum(sizes)), dtype=np.float32)
    X[np.arange(choices.shape[0])[:, None], offsets + choices] = 1.0
    return X


@pytest.fixture(scope="module")
def nb201_data():
    """Random NAS-Bench-201 choice vectors, their encoding and synthetic latencies (the
    weights of a predictor do not change its cost)."""
    from hwnas.spaces import get_space

    space = get_space("nb201")
    sizes = space.decisions()
    rng = np.random.default_rng(0)
    C = np.stack([rng.integers(0, k, N_ARCHS) for k in sizes], axis=1)
    X = _onehot(C, sizes)
    assert np.array_equal(X[0], space.encode(space.arch(C[0].tolist())))
    y = 2.0 + np.array([0.05, 0.0, 1.0, 3.0, 0.6])[C[:2000]].sum(1)
    return C, X, y, sizes


@pytest.fixture(scope="module")
def mlp(nb201_data):
    from hwnas.predictors import create_predictor

    _, X, y, _ = nb201_data
    return create_predictor("mlp", epochs=5).fit(X[:2000], y)


def _throughput(benchmark, n: int) -> None:
    benchmark.extra_info["archs_per_call"] = n
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["archs_per_s_median"] = n / benchmark.stats.stats.median


@pytest.mark.benchmark(group="predictor throughput")
@pytest.mark.parametrize("batch", [1024, 8192])
def test_mlp_predict_encoded(benchmark, mlp, nb201_data, batch):
    _, X, _, _ = nb201_data
    out = benchmark(mlp.predict_log, X, batch=batch, threads=1)
    assert out.shape == (len(X),)
    _throughput(benchmark, len(X))


@pytest.mark.benchmark(group="predictor throughput")
def test_mlp_predict_from_choices(benchmark, mlp, nb201_data):
    C, _, _, sizes = nb201_data
    out = benchmark(lambda: mlp.predict_log(_onehot(C, sizes), threads=1))
    assert out.shape == (len(C),)
    _throughput(benchmark, len(C))


@pytest.mark.benchmark(group="predictor throughput")
def test_gbdt_predict(benchmark, nb201_data):
    from hwnas.predictors import create_predictor

    _, X, y, _ = nb201_data
    gbdt = create_predictor("gbdt").fit(X[:2000], y)
    out = benchmark(gbdt.predict, X[:5000])
    assert out.shape == (5000,)
    _throughput(benchmark, 5000)


@pytest.mark.benchmark(group="export")
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_export_time(benchmark, tmp_path, exporter):
    """torch -> ONNX of cifar_resnet20, into an empty cache each round (no cache hits)."""
    import itertools

    import torch

    from hwnas.export import to_onnx
    from hwnas.models import create_model, model_input_shape

    torch.manual_seed(0)
    model = create_model("cifar_resnet20")
    shape = model_input_shape("cifar_resnet20")
    counter = itertools.count()

    def fresh_cache():
        return (model, shape), {"cache_dir": tmp_path / f"c{next(counter)}", "exporter": exporter}

    art = benchmark.pedantic(to_onnx, setup=fresh_cache, rounds=3, warmup_rounds=1)
    assert art.format == "onnx" and art.input_shape == tuple(shape)


@pytest.fixture(scope="module")
def resnet20_artifact(tmp_path_factory):
    import torch

    from hwnas.export import to_onnx
    from hwnas.models import create_model, model_input_shape

    torch.manual_seed(0)
    return to_onnx(
        create_model("cifar_resnet20"),
        model_input_shape("cifar_resnet20"),
        label="cifar_resnet20",
        cache_dir=tmp_path_factory.mktemp("cache"),
        exporter="torchscript",
    )


@pytest.mark.benchmark(group="harness")
def test_timing_loop_cost_per_sample(benchmark):
    """The timing loop around a no-op: what every recorded sample costs beyond the model."""
    from hwnas.profilers.latency import MeasureSettings, time_callable

    settings = MeasureSettings(warmup=0, runs=1000)
    samples, _ = benchmark(time_callable, lambda: None, settings)
    assert len(samples) == 1000
    if benchmark.stats is not None:
        benchmark.extra_info["us_per_sample_median"] = benchmark.stats.stats.median / 1000 * 1e6


@pytest.mark.benchmark(group="harness")
def test_device_measure_call(benchmark, resnet20_artifact):
    """A whole ``cpu-ort`` measure call (session, feed, 20 timed runs, environment) ..."""
    from hwnas.devices import create_device
    from hwnas.profilers.latency import MeasureSettings

    dev = create_device("cpu-ort", threads=1)
    settings = MeasureSettings(warmup=2, runs=20)
    m = benchmark.pedantic(dev.measure, args=(resnet20_artifact, settings), rounds=10)
    assert m.stats.n == 20


@pytest.mark.benchmark(group="harness")
def test_bare_session_runs(benchmark, resnet20_artifact):
    """... against a bare loop of the same 22 ``session.run`` calls on a ready session:
    the difference between the two is the harness' cost per measurement."""
    from hwnas.devices import create_device
    from hwnas.devices.cpu import random_feed

    dev = create_device("cpu-ort", threads=1)
    sess = dev.session(resnet20_artifact)
    feed = random_feed(
        [(i.name, i.type) for i in sess.get_inputs()], resnet20_artifact.shapes_dict()
    )

    def loop():
        for _ in range(22):
            sess.run(None, feed)

    benchmark.pedantic(loop, rounds=10)


@pytest.fixture(scope="module")
def kernel_predictor_and_model(tmp_path_factory):
    """A ``kernel`` predictor on runtime-read kernels (synthetic latencies: the cost of a
    prediction depends on the trees and the model, not on the values) and mobilenetv2."""
    import torch

    from hwnas.export import to_onnx
    from hwnas.models import create_model, model_input_shape
    from hwnas.predictors.kernel import KernelPredictor, KernelRecord, NetworkRecord
    from hwnas.predictors.kernels.runtime import ort_reader_name

    reader = ort_reader_name("all")
    rng = np.random.default_rng(0)
    recs = []
    for i in range(600):
        c = int(rng.choice([16, 32, 64, 128, 256]))
        hw = int(rng.choice([7, 14, 28, 56, 112]))
        kind = ("conv", "dwconv", "add", "gap", "fc", "reorder")[i % 6]
        groups = c if kind == "dwconv" else 1
        if kind == "fc":
            recs.append(KernelRecord("fc", 1, 1, c, 1000, reader=reader))
        elif kind == "gap":
            recs.append(KernelRecord("gap", hw, hw, c, c, k=hw, stride=hw, reader=reader))
        else:
            k = 3 if kind in ("conv", "dwconv") else 1
            n_in = 2 if kind == "add" else 1
            recs.append(KernelRecord(kind, hw, hw, c, c, k, 1, groups, hw, hw, "relu",
                                     n_inputs=n_in, reader=reader))  # fmt: skip
    y = [1e-3 + r.macs / 2e9 + (r.in_bytes + r.out_bytes) / 5e9 for r in recs]
    nets = [NetworkRecord(tuple(recs[j] for j in rng.choice(600, 20))) for _ in range(20)]
    yn = [1.2 * sum(r.macs / 2e9 + 1e-3 for r in n.kernels) for n in nets]
    pred = KernelPredictor(n_estimators=100).fit(recs + nets, np.asarray(y + yn))
    torch.manual_seed(0)
    art = to_onnx(
        create_model("mobilenetv2"),
        model_input_shape("mobilenetv2"),
        label="mobilenetv2",
        cache_dir=tmp_path_factory.mktemp("cache"),
    )
    return pred, art


@pytest.mark.benchmark(group="kernel predictor")
@pytest.mark.parametrize("reading", ["cold", "cached"])
def test_kernel_predict_zoo_model(benchmark, kernel_predictor_and_model, reading):
    """Predict mobilenetv2 with a ``kernel`` predictor (issue 16's target: < 50 ms).

    ``cold``: ONNX Runtime reads the model (its optimised graph and tensor shapes), as on
    the first prediction of a file; ``cached``: the reading comes from the kernel cache
    (same file again, e.g. ``hwnas predict`` re-run). Both include the per-kernel table.
    """
    from hwnas.predictors.kernels import runtime

    pred, art = kernel_predictor_and_model

    def predict() -> float:
        if reading == "cold":
            runtime._MEMO.clear()
            ks = runtime.ort_kernels(art.path, art.shapes_dict(), "all", cache=False)
        else:
            ks = pred.read_kernels(art.path, art.input_shape).kernels
        rows = pred.explain(ks)
        return sum(r.in_model_ms for r in rows) + pred.model_overhead_ms

    total = benchmark.pedantic(predict, rounds=10, warmup_rounds=1)
    assert total > 0
    if benchmark.stats is not None:
        benchmark.extra_info["ms_per_model_median"] = 1e3 * benchmark.stats.stats.median
