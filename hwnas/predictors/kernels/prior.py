"""The empirical prior: kernel configurations the zoo and the search spaces actually use.

nn-Meter samples kernel configurations from the distribution of its model
zoo rather than uniformly: a 1x1 conv at 7x7 has hundreds of channels, a
grouped 3x3 conv has group widths of 8 to 64, a stem has three input
channels. Here the distribution is read, not written down: every
convolution, pooling and linear layer of every registered zoo model and of a
few random architectures of every registered search space is recorded with
its input resolution, channels, kernel, stride and groups, by one forward
pass on torch's ``meta`` device (shapes only, no arithmetic, so the whole
prior costs a second or two).

:func:`compute_prior` walks the models; its result is frozen in
``prior_configs.json`` beside this file (regenerate with
``python -m hwnas.predictors.kernels.prior`` after adding a model or a
space; a slow test checks the file is current). Frozen, because a campaign's
plan must not change under a database that is being resumed, and because
walking fifteen models on every import would cost seconds.
:func:`empirical_prior` reads it: the configurations per kernel type in the
formats of :func:`~hwnas.predictors.kernels.sampling.sample_config`. The
sampler draws from it and perturbs the draws, and keeps a share of draws
from its parametric prior for the configurations nobody uses yet.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

SPACE_ARCHS = 8  # random architectures per search space
PRIOR_FILE = Path(__file__).with_name("prior_configs.json")


def _collect(module: nn.Module, shape: tuple[int, ...], out: dict[str, list[tuple]]) -> None:
    """Record the configuration of every conv / pool / linear layer of one forward pass."""
    hooks = []

    def conv_hook(m: nn.Conv2d, inputs, _output) -> None:
        x = inputs[0]
        hw = int(x.shape[-1])
        k, s, g = int(m.kernel_size[0]), int(m.stride[0]), int(m.groups)
        cin, cout = int(m.in_channels), int(m.out_channels)
        if g > 1 and g == cin and cout == cin:
            out["dwconv"].append((hw, cin, k, s, "relu"))
        elif g > 1:
            out["conv"].append((hw, cin, cout, k, s, "relu", g))
        else:
            out["conv"].append((hw, cin, cout, k, s, "relu"))

    def pool_hook(m: nn.Module, inputs, _output) -> None:
        x = inputs[0]
        kind = "maxpool" if isinstance(m, nn.MaxPool2d) else "avgpool"
        k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
        s = m.stride if isinstance(m.stride, int) else m.stride[0]
        out[kind].append((int(x.shape[-1]), int(x.shape[1]), int(k), int(s or k)))

    def fc_hook(m: nn.Linear, _inputs, _output) -> None:
        out["fc"].append((int(m.in_features), int(m.out_features), "none"))

    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
            hooks.append(m.register_forward_hook(pool_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(fc_hook))
    try:
        with torch.no_grad():
            module.to("meta").eval()(torch.empty(shape, device="meta"))
    finally:
        for h in hooks:
            h.remove()


def compute_prior(sources: tuple[str, ...] = ("zoo", "spaces")) -> dict[str, tuple[tuple, ...]]:
    """Configurations per kernel type used by the zoo models and the spaces' architectures.

    Deterministic: only the models and spaces hwnas ships count (a plug-in or
    a test registering its own must not change the plan), and the spaces'
    architectures are drawn with a fixed seed, so a campaign's plan is
    reproducible and resumable. A space that cannot be built is skipped.

    Returns:
        type -> configurations (duplicates kept: frequent layers weigh more).
    """
    out: dict[str, list[tuple]] = {k: [] for k in ("conv", "dwconv", "maxpool", "avgpool", "fc")}
    if "zoo" in sources:
        from hwnas.models import MODELS, create_model, list_models, model_input_shape

        for name in list_models():
            if not MODELS.factory(name).__module__.startswith("hwnas.models."):
                continue
            with torch.device("meta"):
                model = create_model(name)
            _collect(model, model_input_shape(name), out)
    if "spaces" in sources:
        from hwnas.errors import HwnasError
        from hwnas.spaces import SPACES, get_space

        for name in SPACES.names():
            try:
                space = get_space(name)
                if not type(space).__module__.startswith("hwnas.spaces."):
                    continue
                rng = np.random.default_rng([0, len(name)])
                for _ in range(SPACE_ARCHS):
                    with torch.device("meta"):
                        model = space.build(space.sample(rng))
                    size = int(space.input_size)
                    _collect(model, (1, 3, size, size), out)
            except (HwnasError, RuntimeError, NotImplementedError):
                continue  # a space that cannot run on the meta device adds nothing
    return {k: tuple(v) for k, v in out.items() if v}


def _to_json(prior: dict[str, tuple[tuple, ...]]) -> dict[str, list]:
    """Unique configurations with their counts, sorted: a small, stable file."""
    return {
        k: [[list(c), n] for c, n in sorted(Counter(v).items(), key=lambda t: repr(t[0]))]
        for k, v in sorted(prior.items())
    }


def write_prior(path: Path = PRIOR_FILE) -> Path:
    """Recompute the prior and freeze it in ``path``."""
    data = {"sources": ["zoo", "spaces"], "space_archs": SPACE_ARCHS}
    configs = _to_json(compute_prior())
    # one configuration per line: a readable diff when a model is added
    lines = [json.dumps(data)[:-1] + ', "configs": {']
    for i, (kind, rows) in enumerate(configs.items()):
        body = ",\n".join(json.dumps(r) for r in rows)
        lines.append(f"{json.dumps(kind)}: [\n{body}\n]" + ("," if i < len(configs) - 1 else ""))
    lines.append("}}")
    path.write_text("\n".join(lines) + "\n")
    return path


@lru_cache(maxsize=1)
def empirical_prior() -> dict[str, tuple[tuple, ...]]:
    """The frozen prior: type -> configurations (repeated by how often the zoo uses them)."""
    data = json.loads(PRIOR_FILE.read_text())
    return {
        k: tuple(tuple(c) for c, n in rows for _ in range(int(n)))
        for k, rows in data["configs"].items()
    }


def prior_summary(prior: dict[str, tuple[tuple, ...]]) -> dict[str, dict[str, float]]:
    """Per type: count and the range of resolutions and channels (for reports and tests)."""
    out = {}
    for kind, cfgs in prior.items():
        if kind == "fc":
            out[kind] = {"n": len(cfgs), "cin_max": max(c[0] for c in cfgs)}
            continue
        hws = [c[0] for c in cfgs]
        chans = [c[1] for c in cfgs]
        out[kind] = {
            "n": len(cfgs),
            "hw_min": min(hws),
            "hw_max": max(hws),
            "c_geomean": float(math.exp(np.mean(np.log(chans)))),
        }
    return out


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    print(f"wrote {write_prior()}")
