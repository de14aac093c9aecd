"""The model registry, kept apart from ``__init__`` so family files can import it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from hwnas.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")


@dataclass(frozen=True)
class ModelInfo:
    """What the zoo knows about a registered model besides its factory.

    Attributes:
        input_size: the square resolution it was designed for.
        family: the architecture family (``hwnas zoo`` groups by it).
        demo: part of the short set ``make demo`` profiles (``hwnas profile demo``).
    """

    input_size: int = 224
    family: str = ""
    demo: bool = False


_INFO: dict[str, ModelInfo] = {}


def register_model(
    input_size: int, help: str = "", family: str = "", demo: bool = False
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory under its function name, with its default square input size.

    Args:
        input_size: default square input resolution.
        help: one line for listings.
        family: architecture family (``ResNet``, ``MobileNet``...), for ``hwnas zoo``.
        demo: include it in the short demo set (keep that set fast to profile).
    """

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.register(factory.__name__, help=help)(factory)
        _INFO[factory.__name__] = ModelInfo(int(input_size), family, bool(demo))
        return factory

    return deco


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model (defaults for entry-point models).

    Raises:
        ConfigError: unknown name (the message lists the valid ones).
    """
    MODELS.factory(name)  # raises ConfigError naming the valid models
    return _INFO.get(name, ModelInfo())


def input_size_of(name: str) -> int:
    return model_info(name).input_size
