"""Latency regression testing: the ``hwnas_latency`` pytest fixture and its statistics.

The pytest plugin (:mod:`hwnas.testing.pytest_plugin`) is registered through the
``pytest11`` entry point, so it loads in every pytest session of anyone who
installs hwnas; this package therefore imports nothing heavy at module level
(no torch, no onnxruntime, no numpy): the fixture imports them when it runs.
"""
