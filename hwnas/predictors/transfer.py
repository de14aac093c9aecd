"""Few-shot transfer of latency predictors to a new device.

Measuring hundreds of architectures on every new device is what makes a
per-device predictor expensive. Here predictors already trained on *source*
devices are adapted to a *target* device from K measured architectures.

``transfer`` (the default, ``hwnas train-predictor --predictor transfer
--transfer-from A.npz,B.npz``) fits a small ridge model in milliseconds on
three groups of features, each with its own penalty:

1. the source predictors' predictions, scaled by their mean on the K samples
   (a device that is "gold_6226 but 3x slower" needs one coefficient);
2. *option counts*: how many decisions of each kind chose each option (how
   many 3x3 convolutions a NAS-Bench-201 cell has, how many MnasNet blocks
   use kernel 5...): an additive per-option cost model with a handful of
   parameters, identifiable from ~10 samples;
3. the per-decision one-hot, heavily penalised: position-specific costs that
   only many samples can pin down.

Why this and not fine-tuning a network: with 20 samples an MLP, even pulled
towards its source weights (``fine-tune``, :meth:`MLPPredictor.fit` with
``init=`` and ``anchor=``, also available as ``--predictor mlp
--transfer-from A.npz``), memorises the samples; the ridge model has ~10
effective parameters. What we measured on the NAS-Bench-201 table
(benchmarks/predictor_nb201.py) is that the *option-count* group carries most
of the few-shot accuracy: relative op costs are what changes between
devices, and the non-additive interactions a source predictor learned did
not correlate across the table's devices (correlation of residuals ~0). The
sources matter most when K is smaller than the number of option counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.errors import PredictorError
from hwnas.predictors.base import Predictor
from hwnas.predictors.mlp import _check_xy
from hwnas.predictors.registry import PREDICTORS

if TYPE_CHECKING:
    from hwnas.spaces.base import SearchSpace


def option_count_matrix(space: SearchSpace) -> np.ndarray:
    """Matrix ``M`` (encoding length x count features) with ``space.encode(a) @ M`` = option counts.

    Decisions of the same kind are grouped: same name suffix after the last
    ``.`` (``b3.kernel`` and ``b5.kernel``) and same number of options; names
    without a dot (NAS-Bench-201's edges ``1<-0``...) group by option count
    alone. Each group contributes one column per option: how many of its
    decisions chose that option. Because it is a matrix product it works for
    relaxed (softmax) encodings too.
    """
    dec = space.decisions()
    names = space.decision_names()
    keys: list[tuple[str, int]] = []
    for name, n in zip(names, dec, strict=True):
        keys.append((name.rsplit(".", 1)[1] if "." in name else "", n))
    groups = sorted(set(keys), key=keys.index)
    col0: dict[tuple[str, int], int] = {}
    ncols = 0
    for g in groups:
        col0[g] = ncols
        ncols += g[1]
    M = np.zeros((sum(dec), ncols), dtype=np.float32)
    offset = 0
    for key, n in zip(keys, dec, strict=True):
        for j in range(n):
            M[offset + j, col0[key] + j] = 1.0
        offset += n
    return M


def _ridge(
    groups: Sequence[np.ndarray], y: np.ndarray, penalties: Sequence[float | None]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge with one penalty per feature group (``None`` leaves a group out) and a free intercept.

    Scaling a group's columns by ``1/sqrt(penalty)`` and solving plain ridge
    with penalty 1 is the same as penalising that group by ``penalty``.
    Returns (coefficients on the scaled columns, column means, intercept).
    """
    A = _design(groups, penalties)
    mu = A.mean(axis=0)
    y0 = float(y.mean())
    Ac = A - mu
    beta = np.linalg.solve(Ac.T @ Ac + np.eye(A.shape[1]), Ac.T @ (y - y0))
    return beta, mu, y0


def _design(groups: Sequence[np.ndarray], penalties: Sequence[float | None]) -> np.ndarray:
    cols = [g / np.sqrt(p) for g, p in zip(groups, penalties, strict=True) if p is not None]
    return np.hstack(cols) if cols else np.zeros((groups[0].shape[0], 0))


@PREDICTORS.register("transfer")
class TransferPredictor(Predictor):
    """Source-device predictors adapted to a target device from a few samples (ridge, see module doc).

    Args:
        source_penalty, count_penalty, onehot_penalty: ridge penalties of the
            three feature groups (``None`` drops a group). Defaults were chosen
            on the NAS-Bench-201 table with K = 10 and 20 (all three targets).

    ``fit(X, y_ms, sources=[...], space=space)``: ``sources`` are trained
    predictors taking the same features ``X``; ``space`` gives the option counts.
    """

    name = "transfer"

    def __init__(
        self,
        source_penalty: float | None = 1.0,
        count_penalty: float | None = 0.1,
        onehot_penalty: float | None = 100.0,
    ):
        pens = (source_penalty, count_penalty, onehot_penalty)
        if all(p is None for p in pens) or any(p is not None and p <= 0 for p in pens):
            raise PredictorError(
                "transfer penalties must be > 0 (or None to drop a group, not all of them)"
            )
        super().__init__(
            source_penalty=None if source_penalty is None else float(source_penalty),
            count_penalty=None if count_penalty is None else float(count_penalty),
            onehot_penalty=None if onehot_penalty is None else float(onehot_penalty),
        )
        self.sources: list[Predictor] = []
        self.counts: np.ndarray | None = None
        self.coef: dict[str, np.ndarray] = {}

    def _penalties(self) -> list[float | None]:
        hp = self.hparams
        return [hp["source_penalty"], hp["count_penalty"], hp["onehot_penalty"]]

    def _groups(self, X: np.ndarray) -> list[np.ndarray]:
        P = np.column_stack([s.predict(X) for s in self.sources]) / self.coef["source_scale"]
        return [P, X @ self.counts, X]

    def fit(
        self,
        X: Any,
        y_ms: np.ndarray,
        sources: Sequence[Predictor] | None = None,
        space: SearchSpace | None = None,
        **kwargs: Any,
    ) -> TransferPredictor:
        X, y = _check_xy(X, y_ms)
        if not sources:
            raise PredictorError(
                "transfer needs source predictors: pass sources=[...] "
                "(on the command line: --transfer-from A.npz[,B.npz])"
            )
        if space is None:
            raise PredictorError("transfer needs the search space (for its option counts)")
        self._check_sources(sources, space, X.shape[1])
        self.sources = list(sources)
        self.counts = option_count_matrix(space)
        if self.counts.shape[0] != X.shape[1]:
            raise PredictorError(
                f"transfer adapts one-hot encodings of {self.counts.shape[0]} entries; the features "
                f"have {X.shape[1]} (train the sources and the target with --encoding onehot)"
            )
        raw = np.column_stack([s.predict(X) for s in self.sources])
        self.coef = {"source_scale": np.maximum(raw.mean(axis=0), 1e-9)}
        beta, mu, y0 = _ridge(self._groups(X), y, self._penalties())
        self.coef.update(beta=beta, mu=mu, intercept=np.array(y0))
        self.meta["sources"] = [s.config() for s in self.sources]
        return self

    @staticmethod
    def _check_sources(sources: Sequence[Predictor], space: SearchSpace, width: int) -> None:
        for i, s in enumerate(sources):
            if s.meta.get("space") not in (None, space.name):
                raise PredictorError(
                    f"source predictor {i + 1} was trained on space '{s.meta['space']}', "
                    f"the target data is '{space.name}'; give sources of the same space"
                )
            if s.meta.get("encoding") not in (None, "onehot"):
                raise PredictorError(
                    f"source predictor {i + 1} uses the '{s.meta['encoding']}' encoding; transfer "
                    "adapts onehot predictors (train the sources with --encoding onehot)"
                )
            length = s.meta.get("encoding_length")
            if length is not None and length != width:
                raise PredictorError(
                    f"source predictor {i + 1} takes {length} features, the target data has {width}"
                )

    def predict(self, X: Any) -> np.ndarray:
        if not self.coef or self.counts is None:
            raise PredictorError("transfer is not trained; call fit() or load a file")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.counts.shape[0]:
            raise PredictorError(
                f"this predictor takes {self.counts.shape[0]} features per architecture, "
                f"got shape {X.shape}"
            )
        A = _design(self._groups(X), self._penalties())
        return (A - self.coef["mu"]) @ self.coef["beta"] + float(self.coef["intercept"])

    # ---- state: own arrays plus every source's, under "src<i>." ----------------------------

    def get_state(self) -> dict[str, np.ndarray]:
        if not self.coef or self.counts is None:
            raise PredictorError("cannot save an untrained transfer predictor; call fit() first")
        state = {k: np.asarray(v) for k, v in self.coef.items()}
        state["counts"] = self.counts
        for i, s in enumerate(self.sources):
            for k, v in s.get_state().items():
                state[f"src{i}.{k}"] = v
        return state

    def set_state(self, arrays: dict[str, np.ndarray]) -> None:
        cfgs = self.meta.get("sources")
        if not isinstance(cfgs, list) or not cfgs:
            raise PredictorError(
                "a transfer predictor file must list its sources in meta.sources; the file is damaged"
            )
        sources: list[Predictor] = []
        for i, cfg in enumerate(cfgs):
            name = cfg.get("predictor") if isinstance(cfg, dict) else None
            if not isinstance(name, str) or not PREDICTORS.is_registered(name):
                raise PredictorError(
                    f"source {i + 1} of this transfer predictor is a '{name}' predictor, "
                    "which this hwnas does not know"
                )
            src = PREDICTORS.factory(name)(**(cfg.get("hparams") or {}))
            src.meta = dict(cfg.get("meta") or {})
            prefix = f"src{i}."
            src.set_state({k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)})
            sources.append(src)
        self.sources = sources
        self.counts = np.asarray(arrays["counts"], dtype=np.float32)
        self.coef = {
            k: np.asarray(arrays[k], dtype=np.float64)
            for k in ("source_scale", "beta", "mu", "intercept")
        }
        expected = sum(
            n
            for n, pen in zip(
                (len(sources), self.counts.shape[1], self.counts.shape[0]),
                self._penalties(),
                strict=True,
            )
            if pen is not None
        )
        if self.coef["beta"].shape != (expected,) or self.coef["source_scale"].shape != (
            len(sources),
        ):
            raise PredictorError(
                "transfer coefficients do not match its sources and encoding; the file is damaged"
            )


def finetune(
    source: Predictor,
    X: np.ndarray,
    y_ms: np.ndarray,
    anchor: float = 0.01,
    epochs: int = 300,
    seed: int = 0,
) -> Predictor:
    """Fine-tune a source ``mlp`` on target samples with an L2 pull to its weights (L2-SP).

    The alternative to :class:`TransferPredictor`; on the NAS-Bench-201 table
    it ranked worse with 20 samples (see the module docstring).
    """
    from hwnas.predictors.mlp import MLPPredictor

    if not isinstance(source, MLPPredictor):
        raise PredictorError(
            f"fine-tuning starts from an 'mlp' predictor, not '{source.name}'; "
            "use --predictor transfer to adapt other predictors"
        )
    hp = dict(source.hparams)
    hp.update(epochs=epochs, val_fraction=0.0, seed=seed, batch_size=max(1, min(len(y_ms), 64)))
    hp.update(weight_decay=0.0, ensemble=len(source.nets))
    tuned = MLPPredictor(**hp)
    tuned.fit(X, y_ms, init=source, anchor=anchor)
    tuned.meta = {
        k: v for k, v in source.meta.items() if k in ("space", "encoding", "encoding_length")
    }
    tuned.meta["finetuned_from"] = {"device": source.meta.get("device"), "anchor": anchor}
    return tuned


__all__ = ["TransferPredictor", "finetune", "option_count_matrix"]
