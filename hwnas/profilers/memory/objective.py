"""The MemNAS memory-efficiency reward, as a reusable objective term.

Source: P. Liu, B. Wu, H. Ma, M. Seok, "MemNAS: Memory-Efficient Neural
Architecture Search with Grow-Trim Learning", CVPR 2020, pp. 2108-2116,
section 3 (candidate evaluation). MemNAS grows and trims a *base* network
each round and ranks the candidates by how they compare with that base on
three measures: accuracy ``a``, the memory of the intermediate feature maps
``e`` (the peak of live activations, :func:`~hwnas.profilers.memory.estimate`)
and the parameter memory ``p``. With ``a_b, e_b, p_b`` those of the previous
round's base network and ``lambda`` in [0, 1]:

    R = lambda * (a / a_b) + (1 - lambda) * (-(w_e * e / e_b) - (w_p * p / p_b))

with ``w_e = w_p = 1`` in the paper (arXiv 1907.09569; the default,
``MEMNAS_WEIGHTS["paper"]``) and ``w_e = 0.7``, ``w_p = 0.3`` in the authors'
released code (``MEMNAS_WEIGHTS["code"]``), which counts the feature maps
more than the weights.

``lambda = 1`` ranks by accuracy alone, ``lambda = 0`` by memory alone (the
smaller both memories relative to the base, the larger R); the paper reports
searches at lambda = 0.5 and 0.8. Ratios to the base, rather than raw bytes,
keep the two memories and the accuracy on one scale round after round.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.errors import ConfigError

#: (activation weight, parameter weight) of the MemNAS reward: the paper's and the released code's.
MEMNAS_WEIGHTS: dict[str, tuple[float, float]] = {"paper": (1.0, 1.0), "code": (0.7, 0.3)}


@dataclass(frozen=True)
class MemoryTerms:
    """Accuracy and the two memories of one network.

    Attributes:
        accuracy: in any unit (fraction or percent), the same for candidate and base.
        activation_bytes: peak live activation memory (``MemoryReport.peak_activation_bytes``).
        param_bytes: parameter memory (``MemoryReport.param_bytes``).
    """

    accuracy: float
    activation_bytes: float
    param_bytes: float


def memory_efficiency(
    candidate: MemoryTerms,
    base: MemoryTerms,
    lam: float = 0.5,
    weights: tuple[float, float] = MEMNAS_WEIGHTS["paper"],
) -> float:
    """MemNAS reward of ``candidate`` against the previous round's ``base`` (higher is better).

    Args:
        candidate: the network being ranked.
        base: the base network of the previous grow/trim round.
        lam: weight of accuracy against memory, in [0, 1].
        weights: (activation, parameter) weights of the memory ratios
            (:data:`MEMNAS_WEIGHTS`: the paper's 1/1 or the released code's 0.7/0.3).

    Raises:
        ConfigError: ``lam`` outside [0, 1], or a base term that is not positive.
    """
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(
            f"lambda must be in [0, 1] (1 = accuracy only, 0 = memory only); got {lam}"
        )
    for name in ("accuracy", "activation_bytes", "param_bytes"):
        if getattr(base, name) <= 0:
            raise ConfigError(
                f"the base network's {name} must be positive to form the MemNAS ratios; "
                f"got {getattr(base, name)}"
            )
    acc = candidate.accuracy / base.accuracy
    w_act, w_par = weights
    mem = (
        w_act * candidate.activation_bytes / base.activation_bytes
        + w_par * candidate.param_bytes / base.param_bytes
    )
    return lam * acc - (1.0 - lam) * mem
