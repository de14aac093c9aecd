"""Figures: labels that do not overlap, the lifetime chart's size and units."""

from __future__ import annotations

import struct

import matplotlib
import onnx
from onnx import TensorProto, helper

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from hwnas.profilers.memory.plot import human_bytes, plot_lifetimes  # noqa: E402
from hwnas.report.labels import place_labels  # noqa: E402


def test_clustered_labels_do_not_overlap():
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    xs = [0.60, 0.62, 0.63, 0.64, 0.2, 3.6]
    ys = [6.1, 6.3, 6.4, 6.5, 2.9, 31.0]
    labels = ["mobilenetv2", "mobilenetv2_b", "mnasnet_a1", "mnasnet_a1_b", "small", "resnet18"]
    ax.scatter(xs, ys)
    ax.margins(x=0.2, y=0.2)
    texts = place_labels(ax, labels, xs, ys)
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(t, renderer) for t in texts]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)
    plt.close(fig)


def test_human_bytes_is_binary():
    assert human_bytes(9.63e6) == "9.18 MiB"
    assert human_bytes(2048) == "2.00 KiB"
    assert human_bytes(10) == "10 B"


def _chain(path, n: int = 30):
    x = helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 8, 64, 64])
    y = helper.make_tensor_value_info(f"t{n}", TensorProto.FLOAT, [1, 8, 64, 64])
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(n)]
    g = helper.make_graph(nodes, "g", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_lifetime_chart_has_a_sensible_size(tmp_path):
    from hwnas.profilers.memory import estimate

    report = estimate(_chain(tmp_path / "chain.onnx"))
    out = plot_lifetimes(report, tmp_path / "m.png")
    w, h = struct.unpack(">II", out.read_bytes()[16:24])
    assert 600 <= w <= 1200 and 400 <= h <= 1200, (w, h)
