"""The bench layer: everything that measures strategies rather than being one.

- :mod:`ttc.bench.datasets`: benchmark formats (GSM8K, MATH-500, multiple choice) and
  deterministic question generators; the question type itself is core (:mod:`ttc.questions`).
- :mod:`ttc.bench.specs`: strategy, budget and dataset specs as written on the command line.
- :mod:`ttc.bench.pool`: recorded sample pools (record once, replay many times) and the
  damage-tolerant JSONL records they and the runner's results are written in.
- :mod:`ttc.bench.replay`: :class:`~ttc.bench.replay.ReplayEngine`, an engine serving a pool.
- :mod:`ttc.bench.runner`: resumable dataset runs and budget grids replayed on pools.
- :mod:`ttc.bench.metrics`, :mod:`ttc.bench.plots`: accuracy, intervals, Pareto fronts, tables.
- :mod:`ttc.bench.cli`: the ``ttc`` command.

The layer rule (checked by ``tests/test_layers.py``): the bench layer may import the
core (``ttc.*``) and the leaves (``ttc.strategies``, ``ttc.verifiers``, ``ttc.routers``,
``ttc.engines``); nothing in the core or the leaves imports it. This package imports no
submodule, so ``import ttc.bench.datasets`` does not load the CLI or plotting.
"""
