"""The method's switches (the ``method:`` section of a config) and their one-time validation.

Every choice of the paper's ablations (Tables 7 and 8) and every deviation from the reference is
a field here; :func:`validate_method` checks a config once at start-up so that the step stays
free of checks, and :func:`expected_scalar_keys` says which scalars a step of that config logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from method.schedules import RAMP_KINDS

STUDENTS = ("both", "unet", "foundation")
ALPHA_STRATEGIES = ("smc", "self", "mutual", "linear", "constant", "cps")
CONSISTENCIES = ("cdcr", "cr", "none")
TEACHER_BN = ("batch", "running")


@dataclass
class MethodConfig:
    students: str = "both"  # both | unet | foundation: which models train (Table 7 "Base")
    supervised_only: bool = False  # SupOnly baseline: labeled loss only
    alpha: str = "smc"  # smc | self | mutual | linear | constant | cps (Table 8)
    alpha_constant: float = 0.5  # alpha of the "constant" strategy
    threshold: float = 0.95  # confidence threshold tau on the ensemble probability (strict >)
    consistency: str = "cdcr"  # cdcr | cr | none: student-student term (Table 7)
    copy_paste: bool = True  # paste a labeled box into the strong unlabeled image
    cp_area: tuple[float, float] = (0.02, 0.4)  # box area as a fraction of the image
    cp_ratio: tuple[float, float] = (0.3, 1 / 0.3)  # box aspect-ratio range
    ramp: str = "gaussian"  # gaussian | linear | none: lambda(t)
    # Iterations over which lambda(t) (and the "linear" alpha) ramps; None = the paper's run
    # length for the dataset (spec), whatever train.max_iterations is.
    ramp_iterations: int | None = None
    ramp_stairs: int = 200  # 0 = continuous; N = the reference's N-step staircase (200)
    consistency_weight: float = 1.0  # lambda at the end of the ramp (never exceeded)
    teacher_bn: str = "batch"  # batch: teachers use batch stats (reference); running: eval


def _one_of(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"method.{key}: unknown {value!r}; expected one of {', '.join(choices)}")


def validate_method(cfg: MethodConfig) -> None:
    """Check a method config once, at start-up, so the step can stay branch-light.

    The alpha strategy is ignored (not an error) with a single student or ``supervised_only``: the
    default ``smc`` stays in such configs.

    Raises:
        ValueError: naming the key, for an unknown choice, an out-of-range value or an inconsistent
            combination (a student-student consistency term without both students, or with
            ``supervised_only``).
    """
    _one_of("students", cfg.students, STUDENTS)
    _one_of("alpha", cfg.alpha, ALPHA_STRATEGIES)
    _one_of("consistency", cfg.consistency, CONSISTENCIES)
    _one_of("ramp", cfg.ramp, RAMP_KINDS)
    _one_of("teacher_bn", cfg.teacher_bn, TEACHER_BN)
    if cfg.consistency != "none" and cfg.students != "both":
        raise ValueError(
            f"method.consistency={cfg.consistency!r} couples two students but "
            f"method.students={cfg.students!r}; set method.consistency=none"
        )
    if cfg.consistency != "none" and cfg.supervised_only:
        raise ValueError(
            f"method.consistency={cfg.consistency!r} is unused with method.supervised_only=true; "
            "set method.consistency=none"
        )
    if not 0.0 <= cfg.threshold <= 1.0:
        raise ValueError(f"method.threshold must be in [0, 1], got {cfg.threshold}")
    if not 0.0 <= cfg.alpha_constant <= 1.0:
        raise ValueError(f"method.alpha_constant must be in [0, 1], got {cfg.alpha_constant}")
    if not 0.0 < cfg.cp_area[0] <= cfg.cp_area[1] <= 1.0:
        raise ValueError(f"method.cp_area must satisfy 0 < low <= high <= 1, got {cfg.cp_area}")
    if not 0.0 < cfg.cp_ratio[0] <= cfg.cp_ratio[1]:
        raise ValueError(f"method.cp_ratio must satisfy 0 < low <= high, got {cfg.cp_ratio}")
    if not cfg.consistency_weight >= 0.0:
        raise ValueError(f"method.consistency_weight must be >= 0, got {cfg.consistency_weight}")
    if cfg.ramp_iterations is not None and cfg.ramp_iterations <= 0:
        raise ValueError(
            f"method.ramp_iterations must be > 0 (or null for the paper's length), "
            f"got {cfg.ramp_iterations}"
        )
    if cfg.ramp_stairs < 0:
        raise ValueError(f"method.ramp_stairs must be >= 0 (0 = continuous), got {cfg.ramp_stairs}")


def trained_students(cfg: MethodConfig) -> tuple[bool, bool]:
    """(trains the U-Net, trains the foundation model)."""
    return cfg.students in ("both", "unet"), cfg.students in ("both", "foundation")


def expected_scalar_keys(cfg: MethodConfig) -> tuple[str, ...]:
    """The keys of ``StepOutput.scalars`` for a (validated) config, for the loop's accumulators."""
    train_u, train_f = trained_students(cfg)
    names = [n for n, on in (("unet", train_u), ("foundation", train_f)) if on]
    keys = [f"sup/{n}" for n in names]
    if not cfg.supervised_only:
        keys += [f"unsup/{n}" for n in names]
        keys += {"cdcr": ["cdcr/consensus", "cdcr/divergence"], "cr": ["cr/mse"], "none": []}[
            cfg.consistency
        ]
        if cfg.students == "both":
            keys += [] if cfg.alpha == "cps" else ["smc/alpha"]
            keys += ["smc/phi_self"] if cfg.alpha in ("smc", "self") else []
            keys += ["smc/phi_mutual"]
        keys += ["pseudo/confident_ratio", "pseudo/mask_ratio"]
    return (*keys, "lambda", "total")
