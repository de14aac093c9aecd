"""The dynamo exporter's op registry, reused across our export calls, changes no exported graph."""

from __future__ import annotations

import io

import onnx
import torch

from hwnas.export.onnx_export import _torchlib_registry_reused


def _graph(module: torch.nn.Module, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(
        module.eval(), (torch.randn(*shape),), buf, dynamo=True, verbose=False, opset_version=18
    )
    return onnx.load_from_string(buf.getvalue()).graph.SerializeToString()


def test_reused_registry_gives_the_same_graphs_and_restores_torch() -> None:
    from torch.onnx._internal.exporter import _registration

    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    pool = torch.nn.Sequential(torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(48, 4))
    before = _registration.ONNXRegistry.__dict__["from_torchlib"]
    plain = [_graph(conv, (1, 3, 8, 8)), _graph(pool, (1, 3, 8, 8))]
    with _torchlib_registry_reused():
        first = _registration.ONNXRegistry.from_torchlib(18)
        assert _registration.ONNXRegistry.from_torchlib(18) is first  # one registry per opset
        reused = [
            _graph(conv, (1, 3, 8, 8)),
            _graph(pool, (1, 3, 8, 8)),
            _graph(conv, (1, 3, 8, 8)),
        ]
    assert reused == [plain[0], plain[1], plain[0]]
    assert _registration.ONNXRegistry.__dict__["from_torchlib"] is before  # torch left as it was
