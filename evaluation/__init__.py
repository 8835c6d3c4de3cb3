"""Evaluation: inference over a split, medpy-compatible metrics on the device, and reports.

:mod:`evaluation.evaluate` runs predictors over every domain's images (per slice) or volumes
(:mod:`evaluation.volumes`); :mod:`evaluation.metrics` and :mod:`evaluation.distances` score
them; :mod:`evaluation.summary` aggregates the scores and :mod:`evaluation.report` prints and
writes them. Nothing here trains or knows the method.
"""
