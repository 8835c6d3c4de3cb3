"""Experimental settings: the labeled domain, the unlabeled stream's domains, the tested domains.

A setting is configuration, not code: ``data.setting`` names a preset that gives the default
unlabeled and evaluated domains relative to the labeled (source) domain, and
``data.unlabeled_domains`` / ``data.eval_domains`` override them (lists of 1-based indices or
folder names). The presets (docs/DATA.md):

- ``midss`` (default; the paper's main setting): ``lb_num`` labeled images of one domain; the
  unlabeled stream is every other train image of every domain; every domain is tested.
- ``ssmis``: semi-supervised on one domain: labeled subset + the rest of that domain unlabeled;
  only that domain is tested (a one-domain dataset such as ACDC is ssmis under every preset).
- ``uda``: every train image of the source domain labeled (``lb_num`` must be null); the
  unlabeled stream is the train images of the other (target) domains; the targets are tested.
- ``le-uda``: label-efficient UDA: ``lb_num`` labeled source images (the rest of the source is
  not used); unlabeled = the target domains' train images; the targets are tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dataloaders.datasets import DataError
from dataloaders.specs import DatasetSpec

SETTINGS = ("midss", "ssmis", "uda", "le-uda")


@dataclass(frozen=True)
class Setting:
    """Resolved domains of one experiment, 0-based indices into ``spec.domains``."""

    name: str
    labeled_domain: int
    unlabeled_domains: tuple[int, ...]
    eval_domains: tuple[int, ...]


def _indices(spec: DatasetSpec, domains: Sequence[str | int], key: str) -> tuple[int, ...]:
    try:
        indices = sorted({spec.domain_index(d) for d in domains})
    except ValueError as error:
        raise DataError(f"data.{key}: {error}") from None
    if not indices:
        raise DataError(f"data.{key}: empty list; expected at least one domain (or null)")
    return tuple(indices)


def resolve_setting(
    spec: DatasetSpec,
    name: str,
    lb_domain: int | str,
    lb_num: int | None,
    unlabeled_domains: Sequence[str | int] | None = None,
    eval_domains: Sequence[str | int] | None = None,
) -> Setting:
    """The domains of preset ``name`` for labeled domain ``lb_domain``, with the explicit
    ``unlabeled_domains`` / ``eval_domains`` (when not None) replacing the preset's.

    Raises:
        DataError: an unknown preset or domain, ``uda`` with an ``lb_num``, a cross-domain
            preset on a one-domain dataset.
    """
    if name not in SETTINGS:
        raise DataError(f"data.setting: unknown {name!r}; expected one of {', '.join(SETTINGS)}")
    try:
        lb = spec.domain_index(lb_domain)
    except ValueError as error:
        raise DataError(str(error)) from None
    everything = tuple(range(len(spec.domains)))
    targets = tuple(d for d in everything if d != lb)
    if name == "uda" and lb_num is not None:
        raise DataError(
            f"data.setting=uda labels every train image of the source domain; set "
            f"data.lb_num=null (got {lb_num}) or use le-uda for a labeled subset"
        )
    if name in ("uda", "le-uda") and not targets:
        raise DataError(f"data.setting={name}: {spec.name} has one domain; expected target domains")
    preset = {"midss": everything, "ssmis": (lb,), "uda": targets, "le-uda": targets}[name]
    unlabeled = (
        preset
        if unlabeled_domains is None
        else _indices(spec, unlabeled_domains, "unlabeled_domains")
    )
    evaluated = preset if eval_domains is None else _indices(spec, eval_domains, "eval_domains")
    return Setting(name, lb, unlabeled, evaluated)
