"""`hwnas export-model NAME|ARCH --out FILE`: write a model file a user can take elsewhere.

The export cache (``$HWNAS_CACHE``) holds hwnas's own copies, named by content
hash and private to the user; this command writes one of them where the user
asks, as an ordinary file (mode from the umask, like any file the user saves),
without overwriting anything unless ``--force``. The README's ``model.onnx`` and
``model.tflite`` are made this way.
"""

from __future__ import annotations

import os
from pathlib import Path

from hwnas.commands._common import console, err_console
from hwnas.errors import ConfigError

FORMATS = ("onnx", "tflite")


def _format_of(out: Path, fmt: str | None) -> str:
    suffix = out.suffix.lower().lstrip(".")
    if fmt is None:
        if suffix not in FORMATS:
            raise ConfigError(
                f"cannot tell the format of {out} from its suffix; give --format onnx or "
                "--format tflite (or name the file .onnx / .tflite)"
            )
        return suffix
    if suffix in FORMATS and suffix != fmt:
        raise ConfigError(
            f"--format {fmt} but --out {out} ends in .{suffix}; name the file .{fmt} or drop --format"
        )
    return fmt


def _target(out: Path, force: bool) -> None:
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name such as {out}/model.onnx")
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; give --force to overwrite it, or another --out")
    if not out.parent.exists():
        raise ConfigError(f"directory {out.parent} does not exist; create it or give another --out")


def build(args):
    """The torch module, its NCHW input shape, a label and its rebuild recipe (``source``)."""
    import torch

    if args.space:
        from hwnas.spaces import get_space

        space = get_space(args.space, input_size=args.input_size, num_classes=args.num_classes)
        text = args.model.strip()
        if text.isdigit() and hasattr(space, "from_index"):
            arch = space.from_index(int(text))
        else:
            arch = space.parse(text)
        torch.manual_seed(args.seed)
        source = {
            "kind": "space",
            "space": space.name,
            "choices": list(arch.choices),
            "input_size": space.input_size,
            "num_classes": space.num_classes,
            "seed": args.seed,
        }
        return space.build(arch), space.input_shape, f"{space.name}-{arch.id[:8]}", source
    from hwnas.models import create_model, is_model, list_models, model_input_shape

    if not is_model(args.model):
        raise ConfigError(
            f"'{args.model}' is not a zoo model ({', '.join(list_models())}); for an "
            "architecture of a search space add --space NAME (e.g. --space nb201 1234)"
        )
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=args.num_classes)
    shape = model_input_shape(args.model)
    if args.input_size:
        shape = (1, 3, args.input_size, args.input_size)
    return model, shape, args.model, {"kind": "zoo", "name": args.model, "seed": args.seed}


def _copy(src: Path, out: Path) -> None:
    """Copy through a sibling temporary name, then rename: no half-written ``out``.

    ``open`` creates the file with the user's umask (0644 usually), unlike the
    cache's private copies.
    """
    tmp = out.with_name(f".{out.name}.part-{os.getpid()}")
    try:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            while chunk := fi.read(1 << 20):
                fo.write(chunk)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def run(args) -> int:
    out = Path(args.out)
    fmt = _format_of(out, args.format)
    _target(out, args.force)
    if args.input_size is not None and args.input_size < 1:
        raise ConfigError(f"--input-size must be a positive integer, got {args.input_size}")
    if args.num_classes is not None and args.num_classes < 1:
        raise ConfigError(f"--num-classes must be a positive integer, got {args.num_classes}")
    if args.quantize and fmt != "tflite":
        raise ConfigError("--quantize applies to --format tflite only")
    module, shape, label, source = build(args)
    err_console.print(
        f"exporting {label} at {'x'.join(map(str, shape))} to {fmt}, checked against torch "
        f"(roughly {'10-60 s' if fmt == 'onnx' else '1-3 min'} here; cached afterwards)"
    )
    if fmt == "onnx":
        from hwnas.export import to_onnx

        art = to_onnx(module, shape, label=label, source=source)
    else:
        from hwnas.export import to_tflite

        art = to_tflite(module, shape, label=label, quantize=args.quantize, source=source)
    _copy(Path(art.path), out)
    from hwnas.profilers.memory.plot import human_bytes

    size = out.stat().st_size
    console.print(
        f"wrote {out} ({fmt}, input {'x'.join(map(str, shape))}, {human_bytes(size)}, "
        f"sha256 {art.sha256[:12]})"
    )
    if fmt == "onnx":
        console.print(f"profile it with: hwnas profile {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "export-model",
        help="write a zoo model or a space architecture to an .onnx or .tflite file",
        description=(
            "Export a zoo model (NAME) or a search-space architecture (ARCH with --space: its "
            "string, or a benchmark index for nb201) to a file you can take elsewhere."
        ),
    )
    p.add_argument(
        "model", metavar="NAME|ARCH", help="zoo model name, or an architecture of --space"
    )
    p.add_argument("--space", default=None, help="search space of ARCH (nb201, mnasnet, ...)")
    p.add_argument("--format", choices=FORMATS, default=None, help="default: from --out's suffix")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the model")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--input-size", type=int, default=None, help="square input resolution")
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs")
    p.add_argument(
        "--quantize", choices=("dynamic-int8",), default=None, help="tflite only: int8 weights"
    )
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    p.set_defaults(func=run)
