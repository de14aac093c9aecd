"""torch -> ONNX with the default (``dynamo=True``) exporter, checked and cached."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from hwnas.errors import ExportError
from hwnas.export import EXPORTERS
from hwnas.export.artifact import Artifact, sha256_file
from hwnas.export.atomic import clean_partials, quiet, written_atomically

DEFAULT_OPSET = 18


def default_cache_dir() -> Path:
    """``$HWNAS_CACHE`` or ``~/.cache/hwnas``: where exported artifacts are kept."""
    return Path(os.environ.get("HWNAS_CACHE", Path.home() / ".cache" / "hwnas")) / "artifacts"


def module_fingerprint(module: torch.nn.Module) -> str:
    """Hash of a module's structure and weights.

    Two modules with the same fingerprint export to the same graph, so the
    cache can hand back the earlier file. Structure comes from ``repr`` (which
    lists every submodule and its hyper-parameters); weights from the bytes of
    the state dict.
    """
    h = hashlib.sha256()
    h.update(type(module).__qualname__.encode())
    h.update(repr(module).encode())
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _quiet() -> contextlib.AbstractContextManager[None]:
    """The exporter prints progress lines and warnings a campaign does not want."""
    return quiet("torch.onnx", "torch.export", "onnxscript")


_TORCHLIB_REGISTRIES: dict[int, object] = {}


@contextlib.contextmanager
def _torchlib_registry_reused() -> Iterator[None]:
    """Let the dynamo exporter reuse its op registry instead of rebuilding it per call.

    torch 2.13's ``torch.onnx.export(dynamo=True)`` builds a fresh
    ``ONNXRegistry.from_torchlib`` on every call: about two thirds of the CPU
    time of exporting a small network (a kernel, an NB201 cell), 3-4x the rest
    of the export. The registry only depends on the opset, and the exporter
    mutates it only for a ``custom_translation_table``, which we never pass; so
    during our own export calls ``from_torchlib`` hands back one registry per
    opset. Outside those calls torch is untouched; on a torch without this
    private hook the export simply runs as before.
    """
    try:
        from torch.onnx._internal.exporter import _registration

        cls = _registration.ONNXRegistry
        original = cls.__dict__["from_torchlib"]
    except (ImportError, AttributeError, KeyError):
        yield
        return

    def reused(klass: type, opset_version: int = 18) -> object:
        if opset_version not in _TORCHLIB_REGISTRIES:
            _TORCHLIB_REGISTRIES[opset_version] = original.__func__(klass, opset_version)
        return _TORCHLIB_REGISTRIES[opset_version]

    cls.from_torchlib = classmethod(reused)
    try:
        yield
    finally:
        cls.from_torchlib = original


def torch_output(module: torch.nn.Module, example: torch.Tensor) -> np.ndarray:
    """The module's (first) output on ``example``: what every exported file must reproduce."""
    with torch.no_grad():
        want = module(example)
    if isinstance(want, tuple | list):
        want = want[0]
    return want.detach().numpy()


def check_parity(
    module: torch.nn.Module,
    path: str | Path,
    example: torch.Tensor,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> float:
    """Run the ONNX file in ONNX Runtime and torch on the same input.

    Returns:
        the largest absolute difference, scaled by the output's magnitude.

    Raises:
        ExportError: the outputs disagree beyond ``atol + rtol * |torch|``.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: example.numpy()})[0]
    want = torch_output(module, example)
    if got.shape != want.shape:
        raise ExportError(
            f"exported ONNX output has shape {got.shape}, torch gives {want.shape}; "
            "the model probably has data-dependent control flow the exporter cannot trace"
        )
    diff = np.abs(got - want)
    bad = diff > atol + rtol * np.abs(want)
    if bad.any():
        raise ExportError(
            f"exported ONNX output differs from torch (max abs diff {diff.max():.3g} at "
            f"{int(bad.sum())} of {bad.size} elements); the exporter mis-translated an op. "
            "Re-export with another opset (opset=...) or report the model"
        )
    scale = float(np.abs(want).max()) or 1.0
    return float(diff.max() / scale)


def to_onnx(
    module: torch.nn.Module,
    input_shape: tuple[int, ...],
    *,
    label: str = "",
    cache_dir: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    seed: int = 0,
    source: dict | None = None,
    exporter: str = "dynamo",
) -> Artifact:
    """Export ``module`` to ONNX for one fixed input shape.

    The module is exported in eval mode. The file lands in ``cache_dir`` under
    a name derived from the module's fingerprint, the input shape, the opset
    and the torch version; a later call with the same inputs returns the cached
    file without exporting again.

    Args:
        module: the torch model (left in eval mode afterwards).
        input_shape: NCHW (or any) static shape of the single input.
        label: recorded with the artifact (zoo name, arch id).
        cache_dir: defaults to :func:`default_cache_dir`.
        check: compare ONNX Runtime against torch on a random input.
        seed: seed of that random input.
        source: how to rebuild the module (``{"kind": "zoo", "name": ...}`` or
            ``{"kind": "space", "space": ..., "choices": [...], ...}``); lets
            ``cpu-torch`` time the same model in eager mode.
        exporter: ``dynamo`` (torch's default exporter, ``torch.export`` +
            onnxscript) or ``torchscript`` (the older tracing exporter, about
            9x faster on MnasNet-space networks here: 0.7 s against 6 s; what
            a campaign of thousands of architectures wants). Both are checked
            against torch the same way. Their graphs are not identical: on 10
            MnasNet-space networks the torchscript files ran 1.7% slower in
            ONNX Runtime (paired, 0.99-1.03) and counted ~0.6% more FLOPs, so
            a dataset should keep to one exporter. The cache key includes it.

    Raises:
        ExportError: the exporter failed, or the exported graph disagrees with torch.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter '{exporter}'; use one of {', '.join(EXPORTERS)}")
    module = module.eval()
    shape = tuple(int(s) for s in input_shape)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    clean_partials(cache)  # what an export killed mid-write left (once per process)
    # The dynamo key keeps its original form so existing caches stay valid.
    tag = "" if exporter == "dynamo" else f"|{exporter}"
    key = hashlib.sha256(
        f"{module_fingerprint(module)}|{shape}|{opset}|{torch.__version__}{tag}".encode()
    ).hexdigest()[:24]
    path = cache / f"{key}.onnx"
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    if not path.exists():
        # Export into a temporary file and rename: a crash mid-export never
        # leaves a truncated file that a later run would take from the cache.
        with written_atomically(
            cache,
            ".onnx",
            path,
            f"torch.onnx.export failed for {label or type(module).__name__}",
            "simplify the model (no data-dependent control flow) or report it",
        ) as tmp:
            reuse = (
                _torchlib_registry_reused() if exporter == "dynamo" else contextlib.nullcontext()
            )
            with _quiet(), reuse:
                torch.onnx.export(
                    module,
                    (example,),
                    tmp,
                    input_names=["input"],
                    output_names=["output"],
                    opset_version=opset,
                    dynamo=exporter == "dynamo",
                    verbose=False,
                    **({"external_data": False} if exporter == "dynamo" else {}),
                )
            if check:
                check_parity(module, tmp, example)
    return Artifact(
        path=str(path),
        format="onnx",
        sha256=sha256_file(path),
        input_shapes=(("input", shape),),
        label=label,
        meta={
            "opset": opset,
            "torch": torch.__version__,
            "exporter": exporter,
            "source": source or {},
        },
    )
