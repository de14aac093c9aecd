"""Kernels read from what the runtime really executes, instead of hand-written fusion rules.

nn-Meter's fusion rules (:mod:`.detect`) are a table of what a runtime is
*expected* to fuse; the table drifts from the installed runtime (a new ONNX
Runtime fuses a residual add into the convolution, lays tensors out in its
blocked NCHWc format and inserts reorders between layouts...). Here the
runtime says it itself:

* **ONNX Runtime**: a session is created with the device's optimisation
  level and ``SessionOptions.optimized_model_filepath``; ORT writes the graph
  it will execute, with its fused nodes (``FusedConv``, ``FusedGemm``, the
  ``com.microsoft.nchwc`` convolutions with their fused activation and fused
  ``Sum`` input, ``ReorderInput``/``ReorderOutput``). Every computing node of
  that graph is one kernel. The blocked tensors have no shapes in the saved
  file, so the saved graph is run once on zeros with every tensor as an
  output to read them.
* **LiteRT**: the operators of the converted ``.tflite`` file
  (``CONV_2D``, ``DEPTHWISE_CONV_2D``, ``FULLY_CONNECTED``, ``MEAN``...) are
  the kernels; their activation is fused in the flatbuffer already.

Each runtime kernel is mapped to a :class:`~.detect.KernelRecord` type by its
*op* (a conv node is a ``conv`` or ``dwconv`` kernel, a pooling node a pooling
kernel, a layout change a ``reorder`` kernel); which nodes form one kernel is
the runtime's decision, not ours. An op with no regressor of its own becomes
an ``elementwise`` kernel with ``op`` set to the runtime's op name, so the
predictor can report it as never sampled instead of guessing silently.

:func:`read_kernels` tries the runtime and falls back to the hand-written
rules (saying why) when the runtime or the file it needs is missing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from hwnas.errors import ConfigError, HwnasError, ProfilingError
from hwnas.predictors.kernels.detect import KernelRecord, detect_kernels
from hwnas.predictors.kernels.detect import _spatial as _chw

KERNEL_SOURCES = ("runtime", "rules")
LITERT_READER = "litert .tflite"
RULES_READER = "hand-written rules"
ORT_LEVELS = ("basic", "extended", "all")

# ORT's fused-activation attribute (bytes) -> our activation names.
_ORT_ACTS = {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "HardSigmoid": "hsigmoid",
    "Tanh": "tanh",
    "LeakyRelu": "leakyrelu",
    "HardSwish": "hswish",
}
# Ops that only reinterpret a buffer (ORT aliases them, LiteRT too): not kernels.
_NOOP = {
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Size",
    "Constant", "ConstantOfShape",
    "RESHAPE", "SQUEEZE", "EXPAND_DIMS",
}  # fmt: skip


@dataclass
class KernelSet:
    """The kernels of one model and where they came from.

    Attributes:
        kernels: in execution order.
        source: ``runtime`` (read from the runtime) or ``rules`` (hand-written fusion rules).
        reader: what read them, e.g. ``onnxruntime 1.32.0 all`` or ``litert .tflite``.
        fallback_reason: why the rules were used although the runtime was asked for.
    """

    kernels: list[KernelRecord]
    source: str
    reader: str
    fallback_reason: str = ""
    ops: list[str] = field(default_factory=list)


def ort_reader_name(optimization: str = "all") -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__} {optimization}"


def _ort_level(optimization: str):
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise ConfigError(
            f"unknown ONNX Runtime optimisation '{optimization}'; use one of {', '.join(levels)}"
        )
    return levels[optimization]


def optimized_onnx(
    path: str | Path, optimization: str = "all", out: str | Path | None = None
) -> onnx.ModelProto:
    """The graph ONNX Runtime executes for ``path`` on this machine (its saved optimised model)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = _ort_level(optimization)
    so.log_severity_level = 3  # the "hardware specific" warning is what we want here
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(out) if out is not None else Path(tmp) / "optimized.onnx"
        so.optimized_model_filepath = str(target)
        try:
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            return onnx.load(str(target))
        except Exception as exc:  # ORT raises its own exception types
            raise ProfilingError(
                f"ONNX Runtime could not optimise {path}: {exc}; check the file with `hwnas flops`"
            ) from exc


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _ort_act(node: onnx.NodeProto) -> str:
    act = _attr(node, "activation")
    if not act:
        return "none"
    if act == "Clip":
        params = list(_attr(node, "activation_params", []) or [])
        return "relu6" if params[:2] == [0.0, 6.0] else "clip"
    return _ORT_ACTS.get(act, act.lower())


def _ort_node_kernel(
    node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]], static: set[str]
) -> KernelRecord | None:
    op = node.op_type
    name = node.name or op
    if op in _NOOP:
        return None
    acts = [t for t in node.input if t and t not in static]
    x = shapes.get(acts[0]) if acts else None
    y = shapes.get(node.output[0]) if node.output else None
    cin, h, w = _chw(x)
    cout, oh, ow = _chw(y)
    common = {"h": h, "w": w, "out_h": oh, "out_w": ow, "nodes": (name,)}
    if op in ("Conv", "FusedConv"):
        wshape = shapes.get(node.input[1], ())
        groups = int(_attr(node, "group", 1))
        cout = int(wshape[0]) if wshape else cout
        cin = int(wshape[1]) * groups if len(wshape) > 1 else cin
        k = int(wshape[2]) if len(wshape) > 2 else 1
        strides = _attr(node, "strides", [1]) or [1]
        fused_sum = len(node.input) > 3 and bool(node.input[3])  # nchwc Conv: residual fused in
        kind = "dwconv" if groups > 1 and groups == cin else "conv"
        return KernelRecord(
            kind,
            cin=cin,
            cout=cout,
            k=k,
            stride=int(strides[0]),
            groups=groups,
            act=_ort_act(node),
            n_inputs=2 if fused_sum else 1,
            op="conv+sum" if fused_sum else "",
            **common,
        )
    if op in ("Gemm", "FusedGemm", "MatMul", "FusedMatMul"):
        rows = int(math.prod(y[:-1])) if y and len(y) > 1 else 1
        a = shapes.get(node.input[0], ())
        k_dim = int(a[-1]) if a else cin
        if op.endswith("Gemm") and _attr(node, "transA", 0):
            k_dim = int(a[0])
        return KernelRecord(
            "fc",
            h=rows,
            w=1,
            cin=k_dim,
            cout=int(y[-1]) if y else cout,
            out_h=rows,
            out_w=1,
            act=_ort_act(node),
            nodes=(name,),
        )
    if op in ("GlobalAveragePool", "GlobalMaxPool") or (
        op in ("ReduceMean", "ReduceMax") and x is not None and len(x) == 4 and oh * ow <= 1
    ):
        is_max = op in ("GlobalMaxPool", "ReduceMax")
        return KernelRecord(
            "gap", h=h, w=w, cin=cin, cout=cin, k=h, stride=h, op="max" if is_max else "",
            nodes=(name,),
        )  # fmt: skip
    if op in ("MaxPool", "AveragePool"):
        kernel = _attr(node, "kernel_shape", [1]) or [1]
        strides = _attr(node, "strides", [1]) or [1]
        return KernelRecord(
            "maxpool" if op == "MaxPool" else "avgpool",
            cin=cin,
            cout=cin,
            k=int(kernel[0]),
            stride=int(strides[0]),
            act=_ort_act(node),
            **common,
        )
    if op in ("ReorderInput", "ReorderOutput"):
        return KernelRecord("reorder", cin=cin, cout=cout, op=op, **common)
    if op in ("Add", "Sum") and len(acts) == 2 and shapes.get(acts[0]) == shapes.get(acts[1]):
        return KernelRecord("add", cin=cin, cout=cout, n_inputs=2, **common)
    if op == "Concat":
        return KernelRecord("concat", cin=cin, cout=cout, n_inputs=max(1, len(acts)), **common)
    if op == "BatchNormalization":
        return KernelRecord("bn", cin=cin, cout=cout, **common)
    return KernelRecord(
        "elementwise", cin=cin, cout=cout, n_inputs=max(1, len(acts)), op=op, **common
    )


def _session_options(level, prepack: bool = False):
    """ORT session options for reading a graph, not for timing it.

    Pre-packing re-lays the weights out for the GEMM kernels when the session
    is created; it costs time and memory and does not change the nodes the
    optimised graph holds, so the reader turns it off.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    if not prepack:
        so.add_session_config_entry("session.disable_prepacking", "1")
    return so


def _read_optimized(
    path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None, optimization: str
) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    """ORT's optimised graph of ``path`` (weights left out) and the shape of each of its tensors.

    Two sessions, no weight copied through Python: the first optimises and
    saves the graph with its weights in a side file; the second loads that
    graph with every tensor made an output (ORT resolves the side file itself)
    and runs it once on zeros, since the blocked NCHWc tensors have no shapes
    in the saved file and ONNX shape inference does not know ORT's ops.
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "optimized.onnx"
        so = _session_options(_ort_level(optimization))
        so.optimized_model_filepath = str(target)
        so.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", "optimized.data"
        )
        so.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
        try:
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            opt = onnx.load(str(target), load_external_data=False)
        except Exception as exc:  # ORT raises its own exception types
            raise ProfilingError(
                f"ONNX Runtime could not optimise {path}: {exc}; check the file with `hwnas flops`"
            ) from exc
        m = onnx.ModelProto()
        m.CopyFrom(opt)  # small: the weights stayed in the side file
        have = {o.name for o in m.graph.output}
        for node in m.graph.node:
            for o in node.output:
                if o and o not in have:
                    m.graph.output.append(onnx.helper.make_empty_tensor_value_info(o))
                    have.add(o)
        probe = Path(tmp) / "probe.onnx"
        onnx.save(m, str(probe))
        try:
            sess = ort.InferenceSession(
                str(probe),
                _session_options(ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                providers=["CPUExecutionProvider"],
            )
            shapes = _run_for_shapes(sess, m, input_shapes)
        except Exception as exc:
            raise ProfilingError(
                f"ONNX Runtime could not run the optimised graph of {path}: {exc}; "
                "give --input-shape if an input is dynamic"
            ) from exc
    return opt, shapes


def _run_for_shapes(
    sess, m: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None
) -> dict[str, tuple[int, ...]]:
    """Run ``sess`` (every tensor of ``m`` an output) once on zeros; each tensor's shape."""
    inits = {i.name for i in m.graph.initializer}
    feeds = {}
    for inp in sess.get_inputs():
        if inp.name in inits:
            continue
        shape = (input_shapes or {}).get(inp.name) or (input_shapes or {}).get("")
        if shape is None:
            shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)
        dtype = np.float32 if "float" in inp.type else np.int64
        feeds[inp.name] = np.zeros(shape, dtype=dtype)
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, feeds)
    shapes = {n: tuple(int(d) for d in v.shape) for n, v in zip(names, values, strict=True)}
    shapes.update({k: tuple(v.shape) for k, v in feeds.items()})
    for init in m.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


# Bump when the mapping from ORT nodes to kernel records changes: cached
# readings of an older mapping are then ignored.
_READER_VERSION = 1
_MEMO: dict[str, list[KernelRecord]] = {}
_MEMO_MAX = 64
_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256


def kernel_cache_dir() -> Path:
    """``$HWNAS_CACHE/kernels`` (default ``~/.cache/hwnas/kernels``): runtime-read kernels."""
    return Path(os.environ.get("HWNAS_CACHE", Path.home() / ".cache" / "hwnas")) / "kernels"


def _cache_key(
    path: Path, input_shapes: dict[str, tuple[int, ...]] | None, optimization: str
) -> str:
    """Content hash of the file + shapes + ORT version and level + reader version."""
    from hwnas.export.artifact import sha256_file

    st = path.stat()
    where = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _HASHES.get(where)  # hashing a large model costs more than predicting it
    if digest is None:
        digest = _HASHES[where] = sha256_file(path)
    shapes = sorted((k, list(map(int, v))) for k, v in (input_shapes or {}).items())
    text = json.dumps([digest, shapes, ort_reader_name(optimization), _READER_VERSION])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cache_get(key: str, use_disk: bool) -> list[KernelRecord] | None:
    if key in _MEMO:
        return list(_MEMO[key])
    if not use_disk:
        return None
    f = kernel_cache_dir() / f"{key}.json"
    try:
        recs = [KernelRecord.from_dict(d) for d in json.loads(f.read_text())]
    except (OSError, ValueError, TypeError):
        return None  # absent or damaged: read the model again
    _memo_put(key, recs)
    return list(recs)


def _memo_put(key: str, recs: list[KernelRecord]) -> None:
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[key] = list(recs)


def _cache_put(key: str, recs: list[KernelRecord], use_disk: bool) -> None:
    _memo_put(key, recs)
    if not use_disk:
        return
    from hwnas.export.atomic import publish, temp_path

    try:
        folder = kernel_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(folder, ".json")
        Path(tmp).write_text(json.dumps([r.to_dict() for r in recs]))
        publish(tmp, folder / f"{key}.json")
    except OSError:
        pass  # a read-only cache only costs the next reading its speed


def ort_kernels(
    path: str | Path,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    optimization: str = "all",
    cache: bool = True,
) -> list[KernelRecord]:
    """The kernels ONNX Runtime executes for ``path``: one per node of its optimised graph.

    Reading them creates two ORT sessions and runs the model once, which costs
    far more than predicting the kernels; so the reading is kept, in memory
    and in :func:`kernel_cache_dir`, under the file's content hash, the input
    shapes, the ORT version and level (a new ORT re-reads, as it may fuse
    differently). ``cache=False`` reads afresh and stores nothing.

    Raises:
        ProfilingError: ORT cannot load or run the model.
    """
    path = Path(path)
    key = _cache_key(path, input_shapes, optimization) if cache else ""
    if cache:
        hit = _cache_get(key, use_disk=True)
        if hit is not None:
            return hit
    opt, shapes = _read_optimized(path, input_shapes, optimization)
    static = {i.name for i in opt.graph.initializer}
    static |= {o for n in opt.graph.node if n.op_type == "Constant" for o in n.output}
    reader = ort_reader_name(optimization)
    out = []
    for node in opt.graph.node:
        rec = _ort_node_kernel(node, shapes, static)
        if rec is not None:
            out.append(replace(rec, reader=reader))
    if cache:
        _cache_put(key, out, use_disk=True)
    return out


def _litert_op_kernel(op: dict, tensors: dict[int, dict]) -> KernelRecord | None:
    name = str(op["op_name"])
    if name in _NOOP:
        return None
    ins = [tensors[i] for i in op["inputs"] if i >= 0]
    acts = [t for t in ins if not _tflite_static(t)]
    x = tuple(int(d) for d in acts[0]["shape"]) if acts else ()
    y = tuple(int(d) for d in tensors[op["outputs"][0]]["shape"]) if op["outputs"] else ()

    def nhwc(shape: tuple[int, ...]) -> tuple[int, int, int]:  # (c, h, w)
        if len(shape) == 4:
            return shape[3], shape[1], shape[2]
        if len(shape) == 2:
            return shape[1], 1, 1
        return (shape[-1] if shape else 1), 1, 1

    cin, h, w = nhwc(x)
    cout, oh, ow = nhwc(y)
    common = {"h": h, "w": w, "out_h": oh, "out_w": ow, "nodes": (f"{name}#{op['index']}",)}
    stride = max(1, round(h / oh)) if oh else 1
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        wshape = tuple(int(d) for d in ins[1]["shape"])  # OHWI, depthwise 1HWO
        k = int(wshape[1]) if len(wshape) > 1 else 1
        if name == "DEPTHWISE_CONV_2D":
            return KernelRecord(
                "dwconv", cin=cin, cout=cout, k=k, stride=stride, groups=cin, **common
            )
        groups = max(1, cin // int(wshape[3])) if len(wshape) == 4 and wshape[3] else 1
        kind = "dwconv" if groups > 1 and groups == cin else "conv"
        return KernelRecord(kind, cin=cin, cout=cout, k=k, stride=stride, groups=groups, **common)
    if name in ("FULLY_CONNECTED", "BATCH_MATMUL"):
        rows = int(math.prod(y[:-1])) if len(y) > 1 else 1
        return KernelRecord(
            "fc", h=rows, w=1, cin=int(x[-1]) if x else 1, cout=int(y[-1]) if y else 1,
            out_h=rows, out_w=1, nodes=common["nodes"],
        )  # fmt: skip
    if name in ("MEAN", "REDUCE_MAX", "SUM") and len(x) == 4 and oh * ow <= 1:
        return KernelRecord(
            "gap", h=h, w=w, cin=cin, cout=cin, k=h, stride=h,
            op="max" if name == "REDUCE_MAX" else "", nodes=common["nodes"],
        )  # fmt: skip
    if name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        kind = "maxpool" if name == "MAX_POOL_2D" else "avgpool"
        # the window is in the builtin options, which the interpreter does not expose
        return KernelRecord(kind, cin=cin, cout=cin, k=max(stride, 2), stride=stride, **common)
    if name == "TRANSPOSE":
        return KernelRecord("reorder", cin=cin, cout=cout, op=name, **common)
    if name == "ADD" and len(acts) == 2 and tuple(acts[0]["shape"]) == tuple(acts[1]["shape"]):
        return KernelRecord("add", cin=cin, cout=cout, n_inputs=2, **common)
    if name == "CONCATENATION":
        return KernelRecord("concat", cin=cin, cout=cout, n_inputs=max(1, len(acts)), **common)
    return KernelRecord(
        "elementwise", cin=cin, cout=cout, n_inputs=max(1, len(acts)), op=name, **common
    )


def _tflite_static(t: dict) -> bool:
    """Weights, biases and constant operands (LiteRT names them after their source)."""
    return "arith.constant" in t["name"] or t["name"].startswith(("pseudo_qconst", "tfl.pseudo"))


def litert_kernels(path: str | Path) -> list[KernelRecord]:
    """The operators of a ``.tflite`` file, in execution order, as kernels.

    Raises:
        MissingExtraError: the ``tflite`` extra is not installed.
        ProfilingError: the file cannot be read.
    """
    from hwnas.errors import require

    interp_mod = require("ai_edge_litert.interpreter", "tflite", "reading .tflite kernels")
    try:
        it = interp_mod.Interpreter(model_path=str(path))
        tensors = {d["index"]: d for d in it.get_tensor_details()}
        ops = it._get_ops_details()
    except Exception as exc:
        raise ProfilingError(f"LiteRT could not read {path}: {exc}; re-export it") from exc
    out = []
    for op in ops:
        rec = _litert_op_kernel(op, tensors)
        if rec is not None:
            out.append(replace(rec, reader=LITERT_READER))
    return out


def read_kernels(
    model: str | Path,
    source: str = "runtime",
    runtime: str = "ort",
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    optimization: str = "all",
    tflite: str | Path | None = None,
) -> KernelSet:
    """The kernels of ``model``: from the runtime when asked and possible, else from the rules.

    Args:
        model: an ONNX file (or a ``.tflite`` file when ``runtime="litert"``).
        source: ``runtime`` or ``rules``.
        runtime: ``ort`` or ``litert`` (the runtime the device runs).
        input_shapes: static shapes of dynamic inputs (``{"": shape}`` for the only one).
        optimization: ORT's optimisation level (the device's).
        tflite: the ``.tflite`` form of an ONNX ``model``, for ``litert``.

    Raises:
        ConfigError: unknown source or runtime.
    """
    if source not in KERNEL_SOURCES:
        raise ConfigError(
            f"unknown kernel source '{source}'; use one of {', '.join(KERNEL_SOURCES)}"
        )
    if runtime not in ("ort", "litert"):
        raise ConfigError(f"unknown runtime '{runtime}'; use 'ort' or 'litert'")
    path = Path(model)
    is_tflite = path.suffix.lower() == ".tflite"
    reason = ""
    if source == "runtime":
        try:
            if runtime == "ort" and not is_tflite:
                ks = ort_kernels(path, input_shapes, optimization)
                return KernelSet(ks, "runtime", ort_reader_name(optimization))
            if runtime == "litert" and (is_tflite or tflite is not None):
                return KernelSet(litert_kernels(tflite or path), "runtime", LITERT_READER)
            reason = (
                f"no .tflite form of {path.name} to read LiteRT's operators from"
                if runtime == "litert"
                else f"{path.name} is not an ONNX file"
            )
        except HwnasError as exc:
            reason = str(exc)
    if is_tflite:
        raise ConfigError(
            f"{path.name}: the hand-written rules read ONNX graphs; give the .onnx file "
            f"({reason or 'rules asked for'})"
        )
    return KernelSet(detect_kernels(path, input_shapes), "rules", RULES_READER, reason)
