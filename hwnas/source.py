"""How to rebuild a model: one typed record, written and read here only.

An exported artifact carries, in ``meta["source"]``, the recipe of the torch
module it came from, so that ``cpu-torch`` and ``cuda-torch`` can time the same
network in eager mode and :func:`hwnas.export.tflite.as_tflite` can re-export
it. That recipe used to be a dict written in four places, and one of them left
out ``num_classes`` and ``input_size``: ``cpu-torch`` then rebuilt the space's
default network (a 10-class nb201 for a 100-class search) and timed the wrong
model. Every writer now goes through :class:`ModelSource`, whose fields are
all there is to say; every reader goes through :meth:`ModelSource.from_dict`.

Import-light: torch and the spaces are imported only by :meth:`ModelSource.build`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hwnas.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from hwnas.arch import Arch
    from hwnas.spaces.base import SearchSpace

#: The kinds of model hwnas can rebuild.
SOURCE_KINDS = ("space", "zoo")


@dataclass(frozen=True)
class ModelSource:
    """The recipe of a module hwnas built itself.

    Attributes:
        kind: ``space`` (an architecture of a registered search space) or
            ``zoo`` (a registered zoo model).
        name: the space's name (``kind="space"``) or the zoo model's name.
        choices: the architecture's decisions (``space`` only).
        input_size: the space's input resolution (``None`` = its default).
        num_classes: the classifier's width (``None`` = the default).
        seed: torch seed the weights were drawn from (same seed, same weights,
            same export-cache entry).
        exporter: the ONNX exporter the artifact was made with.
    """

    kind: str
    name: str
    choices: tuple[int, ...] = ()
    input_size: int | None = None
    num_classes: int | None = None
    seed: int = 0
    exporter: str = "dynamo"

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ConfigError(
                f"unknown model source kind {self.kind!r}; hwnas rebuilds {', '.join(SOURCE_KINDS)} "
                "models only"
            )

    # ---- writing -------------------------------------------------------------------

    @classmethod
    def of_space(
        cls, space: SearchSpace, arch: Arch, *, seed: int = 0, exporter: str = "dynamo"
    ) -> ModelSource:
        """The recipe of ``arch`` built by ``space`` (its input size and classes included)."""
        return cls(
            kind="space",
            name=space.name,
            choices=tuple(int(c) for c in arch.choices),
            input_size=int(space.input_size),
            num_classes=int(space.num_classes),
            seed=int(seed),
            exporter=exporter,
        )

    @classmethod
    def zoo(cls, name: str, *, seed: int = 0, exporter: str = "dynamo") -> ModelSource:
        """The recipe of zoo model ``name``."""
        return cls(kind="zoo", name=name, seed=int(seed), exporter=exporter)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in an artifact's ``meta["source"]``.

        The keys are those older artifacts carry (``space`` + ``choices`` for a
        space, ``name`` for the zoo), so files cached before this record existed
        still read back.
        """
        d: dict[str, Any] = {"kind": self.kind}
        if self.kind == "space":
            d.update(space=self.name, choices=list(self.choices))
        else:
            d["name"] = self.name
        if self.input_size is not None:
            d["input_size"] = self.input_size
        if self.num_classes is not None:
            d["num_classes"] = self.num_classes
        d.update(seed=self.seed, exporter=self.exporter)
        return d

    # ---- reading -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ModelSource:
        """Read back what :meth:`to_dict` wrote (or an older artifact's source).

        Raises:
            ConfigError: the artifact has no source (it was loaded from a file,
                not built by hwnas) or the record is malformed.
        """
        if not d:
            raise ConfigError(
                "this artifact was loaded from a file, not built by hwnas, so hwnas cannot rebuild "
                "its torch module (cpu-torch, cuda-torch, .tflite re-export); use cpu-ort for it"
            )
        kind = d.get("kind")
        key = "space" if kind == "space" else "name"
        name = d.get(key)
        if kind not in SOURCE_KINDS or not isinstance(name, str):
            raise ConfigError(
                f"unreadable model source {d!r}; hwnas rebuilds only {', '.join(SOURCE_KINDS)} "
                "models; re-export the model with this hwnas"
            )
        try:
            return cls(
                kind=kind,
                name=name,
                choices=tuple(int(c) for c in d.get("choices") or ()),
                input_size=None if d.get("input_size") is None else int(d["input_size"]),
                num_classes=None if d.get("num_classes") is None else int(d["num_classes"]),
                seed=int(d.get("seed", 0)),
                exporter=str(d.get("exporter", "dynamo")),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"malformed model source {d!r} ({exc}); re-export the model with this hwnas"
            ) from exc

    # ---- rebuilding ----------------------------------------------------------------

    def space(self) -> SearchSpace:
        """The search space, with this record's input size and classes."""
        if self.kind != "space":
            raise ConfigError(f"zoo model '{self.name}' has no search space")
        from hwnas.spaces import get_space

        return get_space(self.name, input_size=self.input_size, num_classes=self.num_classes)

    def arch(self) -> Arch:
        from hwnas.arch import Arch

        return Arch(self.name, self.choices)

    def input_shape(self) -> tuple[int, ...]:
        """NCHW input shape, batch 1: the space's, or the zoo model's design resolution."""
        if self.kind == "space":
            return tuple(int(s) for s in self.space().input_shape)
        if self.input_size is not None:
            return (1, 3, self.input_size, self.input_size)
        from hwnas.models import model_input_shape

        return model_input_shape(self.name)

    def build(self, space: SearchSpace | None = None) -> torch.nn.Module:
        """The module, weights drawn from ``seed`` under a forked RNG (the caller's is untouched).

        Args:
            space: the space instance to build with, when the caller holds it
                (it may carry options this record does not, e.g. memnas-cells'
                ``blocks``); default: the registered space with this record's
                input size and classes.
        """
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self.kind == "zoo":
                from hwnas.models import create_model

                return create_model(self.name, num_classes=self.num_classes)
            return (space if space is not None else self.space()).build(self.arch())
