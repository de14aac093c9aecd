"""One way to run torch with a fixed number of intra-op threads.

A fixed thread count makes a seeded run give the same numbers on the same
machine, and on a shared CPU one thread is the polite default: the networks
trained inside a search and the predictors' small MLPs are too small for
threads to pay for their synchronisation (measured for the MLP predictor: 5 ms
per step on one thread, 78 ms on two under load). torch is imported only when
the block runs, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hwnas.errors import ConfigError


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, restoring the caller's setting after.

    Args:
        n: threads; ``None`` leaves the current setting alone.

    Raises:
        ConfigError: ``n`` below 1.
    """
    if n is None:
        yield
        return
    if int(n) < 1:
        raise ConfigError(f"threads must be >= 1, got {n}")
    import torch

    old = torch.get_num_threads()
    if int(n) != old:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)
