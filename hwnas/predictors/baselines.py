"""Baselines: ``flops-linear`` (latency ~ a * FLOPs + b) and ``gbdt`` (gradient-boosted trees).

``flops-linear`` is the predictor every hardware-aware NAS paper argues
against: it shows how much of the latency FLOPs alone explain on a device.
``gbdt`` is the strong classical regressor (nn-Meter's kernel predictors are
tree ensembles too).

Why ``gbdt`` re-implements prediction: scikit-learn models are normally saved
as pickles, which break across releases and execute code when loaded. After
fitting with scikit-learn we keep only the trees' arrays (split feature,
threshold, children, leaf value) and predict with a vectorised numpy walk over
them, so a saved file is plain arrays and loading needs no scikit-learn at all.
The walk compares in the same precision as scikit-learn (features cast to
float32, thresholds float64), so both give identical predictions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hwnas.errors import PredictorError
from hwnas.predictors.base import Predictor
from hwnas.predictors.mlp import _check_xy
from hwnas.predictors.registry import PREDICTORS


@PREDICTORS.register("flops-linear")
class FlopsLinearPredictor(Predictor):
    """latency = a * FLOPs + b, least squares on the FLOPs feature (encoding ``flops``).

    Args:
        column: which feature holds FLOPs (0 for the ``flops`` encoding).
        relative: weight each point by 1/latency, minimising relative rather
            than absolute error (fast models then count as much as slow ones).
    """

    name = "flops-linear"
    default_encoding = "flops"

    def __init__(self, column: int = 0, relative: bool = False):
        super().__init__(column=int(column), relative=bool(relative))
        self.coef: np.ndarray | None = None

    def _x(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        c = self.hparams["column"]
        if X.ndim != 2 or X.shape[1] <= c:
            raise PredictorError(
                f"flops-linear reads FLOPs from feature {c}, but the features have shape {X.shape}; "
                "use the 'flops' encoding"
            )
        return X[:, c]

    def fit(self, X: Any, y_ms: np.ndarray, **kwargs: Any) -> FlopsLinearPredictor:
        X, y = _check_xy(X, y_ms, np.float64)
        f = self._x(X)
        if np.ptp(f) == 0:
            raise PredictorError(
                "every training architecture has the same FLOPs; flops-linear cannot fit a slope"
            )
        w = 1.0 / y if self.hparams["relative"] else np.ones_like(y)
        A = np.column_stack([f, np.ones_like(f)]) * w[:, None]
        self.coef, *_ = np.linalg.lstsq(A, y * w, rcond=None)
        return self

    def predict(self, X: Any) -> np.ndarray:
        if self.coef is None:
            raise PredictorError("flops-linear is not trained; call fit() or load a file")
        return self.coef[0] * self._x(X) + self.coef[1]

    def get_state(self) -> dict[str, np.ndarray]:
        if self.coef is None:
            raise PredictorError(
                "cannot save an untrained flops-linear predictor; call fit() first"
            )
        return {"coef": np.asarray(self.coef, dtype=np.float64)}

    def set_state(self, arrays: dict[str, np.ndarray]) -> None:
        coef = np.asarray(arrays["coef"], dtype=np.float64)
        if coef.shape != (2,):
            raise PredictorError(f"flops-linear coefficients must be 2 numbers, got {coef.shape}")
        self.coef = coef


@PREDICTORS.register("gbdt")
class GBDTPredictor(Predictor):
    """Gradient-boosted regression trees on log-latency (fitted by scikit-learn, saved as arrays).

    Args:
        n_estimators, learning_rate, max_depth, subsample, min_samples_leaf:
            scikit-learn ``GradientBoostingRegressor`` settings.
        seed: its ``random_state``.
    """

    name = "gbdt"

    def __init__(
        self,
        n_estimators: int = 600,
        learning_rate: float = 0.05,
        max_depth: int = 4,
        subsample: float = 0.8,
        min_samples_leaf: int = 3,
        seed: int = 0,
    ):
        super().__init__(
            n_estimators=int(n_estimators),
            learning_rate=float(learning_rate),
            max_depth=int(max_depth),
            subsample=float(subsample),
            min_samples_leaf=int(min_samples_leaf),
            seed=int(seed),
        )
        self.trees: dict[str, np.ndarray] | None = None

    def fit(self, X: Any, y_ms: np.ndarray, **kwargs: Any) -> GBDTPredictor:
        from sklearn.ensemble import GradientBoostingRegressor

        X, y = _check_xy(X, y_ms, np.float64)
        hp = self.hparams
        model = GradientBoostingRegressor(
            loss="squared_error",
            n_estimators=hp["n_estimators"],
            learning_rate=hp["learning_rate"],
            max_depth=hp["max_depth"],
            subsample=hp["subsample"],
            min_samples_leaf=hp["min_samples_leaf"],
            random_state=hp["seed"],
        )
        model.fit(X, np.log(y))
        self.sklearn_model = model  # kept in memory only, for comparison; never saved
        self.trees = self.arrays_from_sklearn(model, X.shape[1])
        return self

    @staticmethod
    def arrays_from_sklearn(model: Any, n_features: int) -> dict[str, np.ndarray]:
        """The fitted ensemble as padded arrays, one row per tree."""
        trees = [est[0].tree_ for est in model.estimators_]
        m = max(t.node_count for t in trees)
        T = len(trees)
        feature = np.zeros((T, m), dtype=np.int32)
        threshold = np.zeros((T, m), dtype=np.float64)
        value = np.zeros((T, m), dtype=np.float64)
        left = np.full((T, m), -1, dtype=np.int32)
        right = np.full((T, m), -1, dtype=np.int32)
        for i, t in enumerate(trees):
            n = t.node_count
            # Leaves carry feature -2 in scikit-learn; 0 is a harmless index for them.
            feature[i, :n] = np.maximum(t.feature, 0)
            threshold[i, :n] = t.threshold
            value[i, :n] = t.value[:, 0, 0]
            left[i, :n] = t.children_left
            right[i, :n] = t.children_right
        init = float(np.asarray(model.init_.constant_).ravel()[0])
        return {
            "feature": feature,
            "threshold": threshold,
            "value": value,
            "left": left,
            "right": right,
            "init": np.array(init),
            "learning_rate": np.array(float(model.learning_rate)),
            "depth": np.array(max(t.max_depth for t in trees), dtype=np.int32),
            "n_features": np.array(int(n_features), dtype=np.int32),
        }

    def predict_log(self, X: Any, chunk: int = 4096) -> np.ndarray:
        if self.trees is None:
            raise PredictorError("gbdt is not trained; call fit() or load a file")
        tr = self.trees
        X = np.asarray(X)
        if X.ndim == 1:
            X = X[None, :]
        nf = int(tr["n_features"])
        if X.ndim != 2 or X.shape[1] != nf:
            raise PredictorError(
                f"this gbdt takes {nf} features per architecture, got shape {X.shape}; encode "
                f"with the space and encoding it was trained on ({self.meta.get('space', '?')}, "
                f"{self.meta.get('encoding', '?')})"
            )
        # scikit-learn compares float32 features against float64 thresholds.
        X = X.astype(np.float32).astype(np.float64)
        T = tr["feature"].shape[0]
        tidx = np.arange(T)[None, :]
        out = np.empty(X.shape[0], dtype=np.float64)
        for s in range(0, X.shape[0], chunk):
            xb = X[s : s + chunk]
            rows = np.arange(xb.shape[0])[:, None]
            node = np.zeros((xb.shape[0], T), dtype=np.int32)
            for _ in range(int(tr["depth"])):
                lft = tr["left"][tidx, node]
                leaf = lft < 0
                go_left = xb[rows, tr["feature"][tidx, node]] <= tr["threshold"][tidx, node]
                node = np.where(leaf, node, np.where(go_left, lft, tr["right"][tidx, node]))
            out[s : s + chunk] = tr["value"][tidx, node].sum(axis=1)
        return float(tr["init"]) + float(tr["learning_rate"]) * out

    def predict(self, X: Any) -> np.ndarray:
        return np.exp(self.predict_log(X))

    def get_state(self) -> dict[str, np.ndarray]:
        if self.trees is None:
            raise PredictorError("cannot save an untrained gbdt predictor; call fit() first")
        return dict(self.trees)

    def set_state(self, arrays: dict[str, np.ndarray]) -> None:
        keys = ("feature", "threshold", "value", "left", "right", "init", "learning_rate", "depth")
        trees = {k: np.asarray(arrays[k]) for k in (*keys, "n_features")}
        shape = trees["feature"].shape
        for k in ("threshold", "value", "left", "right"):
            if trees[k].shape != shape:
                raise PredictorError(f"gbdt array '{k}' has shape {trees[k].shape}, not {shape}")
        m = shape[1]
        nf = int(trees["n_features"])
        if trees["feature"].size and (trees["feature"].min() < 0 or trees["feature"].max() >= nf):
            raise PredictorError(
                "gbdt split features point outside the inputs; the file is damaged"
            )
        for k in ("left", "right"):
            if trees[k].size and (trees[k].max() >= m or trees[k].min() < -1):
                raise PredictorError(
                    f"gbdt array '{k}' points outside its tree; the file is damaged"
                )
        self.trees = trees


__all__ = ["FlopsLinearPredictor", "GBDTPredictor"]
