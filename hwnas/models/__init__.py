"""The model zoo: fixed reference networks, built without torchvision.

timm-style lookups by name::

    from hwnas.models import create_model, list_models, model_input_shape
    net = create_model("mnasnet_a1", num_classes=10)
    x = torch.randn(model_input_shape("mnasnet_a1"))

``create_model`` drops keyword arguments left as ``None`` so a CLI default
never overrides the model's own default. One file per family (module class,
builder, registered factories); the shared blocks in :mod:`hwnas.models.blocks`
are reused by the search spaces.
"""

from __future__ import annotations

from torch import nn

from hwnas.models import densenet as _densenet  # noqa: F401  (registers)
from hwnas.models import efficientnet as _efficientnet  # noqa: F401
from hwnas.models import googlenet as _googlenet  # noqa: F401
from hwnas.models import mnasnet as _mnasnet  # noqa: F401
from hwnas.models import mobilenet as _mobilenet  # noqa: F401
from hwnas.models import mobilenetv2 as _mobilenetv2  # noqa: F401
from hwnas.models import regnet as _regnet  # noqa: F401
from hwnas.models import resnet as _resnet  # noqa: F401
from hwnas.models import shufflenet as _shufflenet  # noqa: F401
from hwnas.models import squeezenet as _squeezenet  # noqa: F401
from hwnas.models._registry import MODELS, ModelInfo, input_size_of, model_info, register_model
from hwnas.models.blocks import count_params


def list_models(demo: bool = False) -> list[str]:
    """Names of every registered model, sorted (``demo=True``: only the short demo set)."""
    names = MODELS.names()
    return [n for n in names if model_info(n).demo] if demo else names


def is_model(name: str) -> bool:
    return MODELS.is_registered(name)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the model ``name``; ``None``-valued kwargs are dropped.

    Raises:
        ConfigError: unknown name (the message lists the valid ones).
    """
    return MODELS.create(name, **kwargs)


def model_input_shape(name: str, batch: int = 1) -> tuple[int, int, int, int]:
    """Default NCHW input shape of ``name`` (the resolution it was designed for)."""
    size = input_size_of(name)
    return (batch, 3, size, size)


__all__ = [
    "MODELS",
    "ModelInfo",
    "count_params",
    "create_model",
    "is_model",
    "list_models",
    "model_info",
    "model_input_shape",
    "register_model",
]
