"""The pieces of the ``kernel`` predictor (see :mod:`hwnas.predictors.kernel`).

* :mod:`.runtime`: the kernels the runtime executes (ONNX Runtime's optimised graph,
  the operators of a .tflite file), with the rules as the fallback (:func:`read_kernels`).
* :mod:`.detect`: the hand-written fusion rules for any ONNX graph (:func:`detect_kernels`).
* :mod:`.forest`: tree ensembles as numpy arrays (fit with scikit-learn, saved without pickle).
* :mod:`.prior`: the layer configurations the zoo and the spaces use (frozen in a JSON file).
* :mod:`.sampling`: kernel configurations from that prior, one-kernel torch modules,
  random calibration networks.
* :mod:`.campaign`: measure them on a device into the store (``hwnas sample-kernels``),
  with resumable adaptive rounds.
* :mod:`.data`: read them back for training (:func:`kernel_training_data`).
"""

from hwnas.predictors.kernels.detect import (
    FEATURE_NAMES,
    KERNEL_TYPES,
    KernelRecord,
    detect_kernels,
)
from hwnas.predictors.kernels.forest import TreeEnsemble

__all__ = ["FEATURE_NAMES", "KERNEL_TYPES", "KernelRecord", "TreeEnsemble", "detect_kernels"]
