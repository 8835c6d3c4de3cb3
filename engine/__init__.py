"""The training engine around the method: config, building a run, the loop, checkpoints.

:mod:`engine.trainer` is the loop (read it first); it builds a run with :mod:`engine.build`
from an :mod:`engine.config`, draws :mod:`engine.batches`, calls :func:`method.step.synfoc_step`,
steps :mod:`engine.optim` and the teachers (:mod:`engine.ema`), logs through
:mod:`engine.meter` and :mod:`engine.diagnostics`, evaluates with :mod:`engine.validation` and
saves with :mod:`engine.checkpoint` behind :mod:`engine.guards`. :mod:`engine.runs` and
:mod:`engine.evaluate_run` are what ``train.py`` and ``test.py`` call.
"""
