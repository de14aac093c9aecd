"""torch -> .tflite through litert-torch (extra ``tflite``), checked and cached.

Layout: a TFLite model computes in NHWC internally, but litert-torch keeps
the torch signature, so the exported file takes the same NCHW input as the
torch module (it inserts the transposes itself). The parity check therefore
feeds the very tensor torch gets, with no layout juggling here.

Quantisation: ``quantize="dynamic-int8"`` gives dynamic-range int8 (weights
stored as int8 per channel, activations quantised on the fly), made by the
AI Edge Quantizer from the fp32 file (the fp32 export is cached on the way).
It is the form that needs no calibration data; fp32 stays the default
because int8 latency depends heavily on the kernels a phone has.

Like :func:`hwnas.export.to_onnx`, a file is written to a temporary name and
renamed once checked, so a crash never leaves a broken file in the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import numpy as np

from hwnas.errors import ConfigError, ExportError, require
from hwnas.export.artifact import Artifact, sha256_file
from hwnas.export.atomic import clean_partials, quiet, written_atomically
from hwnas.export.onnx_export import default_cache_dir, module_fingerprint, torch_output

QUANTIZE_CHOICES = (None, "dynamic-int8")

#: Parity tolerances. fp32: per element, ``atol * max|torch| + rtol * |torch|``
#: (scaled by the output's magnitude, since a tiny-output model would pass any
#: absolute tolerance). int8: the whole output's relative L2 error, since
#: quantisation moves every element a little by design; the check is there to
#: catch a broken conversion (wrong layout, wrong op), not quantisation noise.
FP32_RTOL, FP32_ATOL = 1e-3, 1e-4
INT8_REL_L2 = 0.25


def _versions(quantize: str | None) -> dict[str, str | None]:
    from hwnas.devices.hostinfo import package_version

    v = {
        "litert-torch": package_version("litert-torch"),
        "ai-edge-litert": package_version("ai-edge-litert"),
    }
    if quantize:
        v["ai-edge-quantizer"] = package_version("ai-edge-quantizer")
    return v


@contextlib.contextmanager
def _quiet():
    """litert-torch prints a progress tree and torch.export warnings for every model."""
    old = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        with quiet("torch.export", "torch._export", "absl", "litert_torch"):
            yield
    finally:
        if old is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = old


def run_tflite(path: str | Path, inputs: list[np.ndarray], threads: int = 1) -> list[np.ndarray]:
    """Run a .tflite file once in the LiteRT interpreter; outputs in signature order."""
    interp_mod = require("ai_edge_litert.interpreter", "tflite", "running a .tflite model")
    interp = interp_mod.Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    details = interp.get_input_details()
    if len(details) != len(inputs):
        raise ExportError(
            f"{path} has {len(details)} inputs, the torch module takes {len(inputs)}; "
            "export modules with a single tensor input"
        )
    for d, x in zip(details, inputs, strict=True):
        if tuple(d["shape"]) != tuple(x.shape):
            raise ExportError(
                f"{path} expects input shape {tuple(d['shape'])}, torch got {tuple(x.shape)}; "
                "the converter changed the layout, which hwnas does not expect from litert-torch"
            )
        interp.set_tensor(d["index"], x.astype(d["dtype"]))
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def check_tflite_parity(
    module,
    path: str | Path,
    example,
    quantize: str | None = None,
) -> float:
    """Compare the .tflite file (LiteRT interpreter) with torch on one input.

    Returns:
        the relative error: max abs difference / max |torch| for fp32, the
        relative L2 error for int8.

    Raises:
        ExportError: shapes differ or the error is beyond the tolerance.
    """
    got = run_tflite(path, [example.numpy()])[0]
    want = torch_output(module, example)
    if got.shape != want.shape:
        raise ExportError(
            f"the .tflite output has shape {got.shape}, torch gives {want.shape}; "
            "the converter mis-translated the model (report it with the model)"
        )
    diff = np.abs(got.astype(np.float64) - want)
    scale = float(np.abs(want).max()) or 1.0
    if quantize is None:
        bad = diff > FP32_ATOL * scale + FP32_RTOL * np.abs(want)
        if bad.any():
            raise ExportError(
                f"the .tflite output differs from torch (max abs diff {diff.max():.3g}, "
                f"{diff.max() / scale:.2%} of the output's range, at {int(bad.sum())} of "
                f"{bad.size} elements); litert-torch mis-translated an op: report the model, "
                "or measure it as ONNX on cpu-ort instead"
            )
        return float(diff.max() / scale)
    rel = float(np.linalg.norm(diff) / (np.linalg.norm(want) or 1.0))
    if rel > INT8_REL_L2:
        raise ExportError(
            f"the {quantize} .tflite output is {rel:.1%} away from torch (relative L2; "
            f"limit {INT8_REL_L2:.0%}): the quantised model is broken for this input, "
            "not merely less precise; use fp32 (quantize=None) for this model"
        )
    return rel


def _convert_fp32(module, example, dest: str) -> None:
    litert_torch = require("litert_torch", "tflite", "torch -> TFLite export")
    with _quiet():
        edge_model = litert_torch.convert(module, (example,))
        edge_model.export(dest)


def _quantize_dynamic_int8(src: Path, dest: str) -> None:
    quantizer = require("ai_edge_quantizer.quantizer", "tflite", "dynamic-int8 TFLite export")
    recipe = require("ai_edge_quantizer.recipe", "tflite", "dynamic-int8 TFLite export")
    with _quiet():
        qt = quantizer.Quantizer(str(src))
        qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        result = qt.quantize()
    if not result.quantized_model:
        raise ExportError(f"the AI Edge Quantizer produced no model from {src}; report the model")
    with open(dest, "wb") as f:
        f.write(bytes(result.quantized_model))


def to_tflite(
    module,
    input_shape: tuple[int, ...],
    *,
    label: str = "",
    cache_dir: str | Path | None = None,
    quantize: str | None = None,
    check: bool = True,
    seed: int = 0,
    source: dict | None = None,
) -> Artifact:
    """Export ``module`` to a .tflite file for one fixed NCHW input shape.

    Args:
        module: the torch model (put in eval mode).
        input_shape: the static input shape, in torch's layout (NCHW).
        label: recorded with the artifact (zoo name, arch id).
        cache_dir: defaults to :func:`hwnas.export.default_cache_dir`.
        quantize: ``None`` (fp32) or ``"dynamic-int8"``.
        check: compare the LiteRT interpreter's output with torch.
        seed: seed of the random parity input.
        source: how to rebuild the module (see :func:`hwnas.export.to_onnx`).

    Raises:
        ConfigError: unknown ``quantize``.
        MissingExtraError: litert-torch / ai-edge-litert not installed (extra ``tflite``).
        ExportError: the conversion failed or disagrees with torch.
    """
    import torch

    if quantize not in QUANTIZE_CHOICES:
        raise ConfigError(f"unknown quantize={quantize!r}; use None (fp32) or 'dynamic-int8'")
    module = module.eval()
    shape = tuple(int(s) for s in input_shape)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    clean_partials(cache)  # what an export killed mid-write left (once per process)
    versions = _versions(quantize)
    if versions["litert-torch"] is None or versions["ai-edge-litert"] is None:
        missing = "litert_torch" if versions["litert-torch"] is None else "ai_edge_litert"
        require(missing, "tflite", "torch -> TFLite export")
    key = hashlib.sha256(
        f"{module_fingerprint(module)}|{shape}|{quantize}|{torch.__version__}|"
        f"{sorted(versions.items())}".encode()
    ).hexdigest()[:24]
    suffix = "" if quantize is None else f".{quantize}"
    path = cache / f"{key}{suffix}.tflite"
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    if not path.exists():
        fp32 = None
        if quantize is not None:
            fp32 = to_tflite(module, shape, label=label, cache_dir=cache, check=check, seed=seed)
        with written_atomically(
            cache,
            ".tflite",
            path,
            f"TFLite export failed for {label or type(module).__name__}",
            "simplify the model (no data-dependent control flow), or measure it as ONNX",
            passthrough=(ExportError, ImportError),
        ) as tmp:
            if fp32 is None:
                _convert_fp32(module, example, tmp)
            else:
                _quantize_dynamic_int8(Path(fp32.path), tmp)
            if check:
                check_tflite_parity(module, tmp, example, quantize)
    return Artifact(
        path=str(path),
        format="tflite",
        sha256=sha256_file(path),
        input_shapes=(("input", shape),),
        label=label,
        meta={
            "torch": torch.__version__,
            **versions,
            "quantize": quantize or "fp32",
            "layout": "NCHW input (torch signature; NHWC inside the TFLite graph)",
            "source": source or {},
        },
    )


def ensure_tflite(artifact: Artifact, quantize: str | None = None) -> Artifact:
    """The .tflite form of ``artifact``: itself, or re-exported from its torch source.

    Lets a TFLite device take the ONNX artifacts the rest of hwnas passes
    around (``hwnas profile mobilenetv2 --device cpu-litert``): a zoo model or
    search-space architecture is rebuilt with the same seed and exported with
    :func:`to_tflite` (cached).

    Raises:
        ConfigError: the artifact came from a file, so there is no torch module to convert.
    """
    if artifact.format == "tflite":
        return artifact
    source = artifact.meta.get("source") or {}
    if not source:
        raise ConfigError(
            f"{artifact.label or artifact.path} is an {artifact.format} file without a torch "
            "source, so hwnas cannot make a .tflite of it; convert it yourself and pass the "
            ".tflite file, or measure it on cpu-ort"
        )
    from hwnas.devices.cpu import build_from_source

    module = build_from_source(source)
    return to_tflite(
        module,
        artifact.input_shape,
        label=artifact.label,
        quantize=quantize,
        source=source,
    )


def load_tflite(path: str | Path, label: str | None = None) -> Artifact:
    """Wrap a user's .tflite file as an :class:`Artifact` (input shapes read from the file).

    Raises:
        ConfigError: missing file, or not a model the LiteRT interpreter can load.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no such file: {p}; give the path of a .tflite file")
    interp_mod = require("ai_edge_litert.interpreter", "tflite", "reading a .tflite model")
    try:
        interp = interp_mod.Interpreter(model_path=str(p))
        details = interp.get_input_details()
    except Exception as exc:
        raise ConfigError(
            f"{p} is not a model the LiteRT interpreter can load ({exc}); check the file"
        ) from exc
    shapes = tuple((d["name"], tuple(int(s) for s in d["shape"])) for d in details)
    return Artifact(
        path=str(p.resolve()),
        format="tflite",
        sha256=sha256_file(p),
        input_shapes=shapes,
        label=label or p.stem,
        meta={"source": {}},
    )
