"""Procedural multi-domain demo data in the layout of ``specs.SYNTHETIC``.

Each image shows one large "organ" blob, sometimes with a small "lesion" inside it, on a
textured background. The three sites differ the way scanners and hospitals do: intensity
level and contrast (siteB's lesions are darker than the organ, the others' brighter), noise
level, texture (smooth, speckle, bias field with clutter) and shape statistics (organ size and
elongation, boundary irregularity, lesion frequency and size). A small U-Net learns it in a few
hundred iterations, and a model trained on one site does noticeably worse on the others.

Generation is deterministic: image ``i`` of a split is drawn from
``numpy.random.default_rng([seed, site, split, i])``, so a rerun writes identical bytes.

    python -m dataloaders.synthetic data/synthetic --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from dataloaders.specs import SYNTHETIC

logger = logging.getLogger(__name__)

MARKER = "synthetic.json"
_VERSION = 1  # bump when the images change, so old folders are regenerated


@dataclass(frozen=True)
class SiteStyle:
    """Appearance and shape statistics of one synthetic site (intensities on 0..255)."""

    background: float
    organ: float
    lesion: float
    noise: float  # additive Gaussian noise std
    speckle: float  # std of multiplicative speckle (0 = none)
    texture: float  # amplitude of a smooth random texture field
    texture_scale: float  # its correlation length in pixels
    bias: float  # amplitude of a linear bias field across the image
    edge_blur: float  # Gaussian sigma of the object edges, pixels
    clutter: int  # small organ-like distractor blobs in the background (at most)
    organ_radius: tuple[float, float]  # long semi-axis, fraction of the image size
    elongation: tuple[float, float]  # long / short axis ratio
    wobble: float  # amplitude of the boundary's harmonics
    lesion_prob: float
    lesion_radius: tuple[float, float]  # fraction of the organ's long semi-axis


STYLES: dict[str, SiteStyle] = {
    # Clean and bright: round organs, bright lesions, little noise.
    "siteA": SiteStyle(
        background=50, organ=130, lesion=205, noise=6, speckle=0.0, texture=6,
        texture_scale=6, bias=0, edge_blur=0.8, clutter=0, organ_radius=(0.22, 0.30),
        elongation=(1.0, 1.3), wobble=0.06, lesion_prob=0.85, lesion_radius=(0.20, 0.35),
    ),
    # Dark, speckled: small elongated organs, lesions darker than the organ.
    "siteB": SiteStyle(
        background=28, organ=95, lesion=40, noise=9, speckle=0.30, texture=4,
        texture_scale=2, bias=0, edge_blur=1.0, clutter=2, organ_radius=(0.16, 0.24),
        elongation=(1.4, 2.0), wobble=0.10, lesion_prob=0.7, lesion_radius=(0.25, 0.45),
    ),
    # Bright and flat: low contrast, strong bias field and noise, irregular organs, clutter.
    "siteC": SiteStyle(
        background=115, organ=170, lesion=230, noise=13, speckle=0.08, texture=10,
        texture_scale=10, bias=35, edge_blur=1.6, clutter=4, organ_radius=(0.24, 0.34),
        elongation=(1.0, 1.5), wobble=0.18, lesion_prob=0.95, lesion_radius=(0.15, 0.30),
    ),
}  # fmt: skip
if tuple(STYLES) != SYNTHETIC.domains:
    raise RuntimeError(f"STYLES {tuple(STYLES)} must match SYNTHETIC.domains {SYNTHETIC.domains}")

# Raw mask values come from the spec, so the encoding is written down only once.
_RAW = {cls: raw for raw, cls in SYNTHETIC.mask_encoding}


def _blob(
    rng: np.random.Generator,
    yy: np.ndarray,
    xx: np.ndarray,
    center: np.ndarray,
    radius: float,
    elongation: float,
    wobble: float,
) -> np.ndarray:
    """Boolean mask of a rotated ellipse whose boundary is perturbed by harmonics 2..4."""
    angle = rng.uniform(0, np.pi)
    dy, dx = yy - np.float32(center[0]), xx - np.float32(center[1])
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = (dx * cos + dy * sin) / np.float32(radius)
    v = (dy * cos - dx * sin) * np.float32(elongation / radius)
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    boundary = np.ones_like(phi)
    for k in (2, 3, 4):
        boundary += wobble * rng.uniform(0, 1) / (k - 1) * np.cos(k * phi + rng.uniform(0, 6.3))
    return rho < boundary


def render(rng: np.random.Generator, style: SiteStyle, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One sample: image (size, size) uint8 and class indices (size, size) uint8 in {0, 1, 2}."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    radius = rng.uniform(*style.organ_radius) * size
    center = size / 2 + rng.normal(0, 0.07 * size, 2).clip(-0.12 * size, 0.12 * size)
    organ = _blob(rng, yy, xx, center, radius, rng.uniform(*style.elongation), style.wobble)
    classes = organ.astype(np.uint8)
    if rng.uniform() < style.lesion_prob:
        inside = np.argwhere(organ)
        spot = inside[rng.integers(len(inside))]
        spot = center + 0.6 * (spot - center)  # keep the lesion away from the organ's rim
        lesion = _blob(rng, yy, xx, spot, rng.uniform(*style.lesion_radius) * radius, 1.3, 0.1)
        classes[lesion & organ] = 2

    level = np.array([style.background, style.organ, style.lesion], np.float32)
    image = level[classes]
    for _ in range(rng.integers(0, style.clutter + 1)):
        spot = rng.uniform(0.1 * size, 0.9 * size, 2)
        blob = _blob(rng, yy, xx, spot, rng.uniform(0.02, 0.05) * size, 1.5, 0.1) & ~organ
        image[blob] = 0.5 * (style.background + style.organ)
    image = gaussian_filter(image, style.edge_blur)
    field = gaussian_filter(rng.normal(size=(size, size)).astype(np.float32), style.texture_scale)
    image += style.texture * field / (field.std() + 1e-6)
    if style.bias:
        direction = rng.normal(size=2)
        ramp = (yy * direction[0] + xx * direction[1]) / (size * np.hypot(*direction))
        image += style.bias * 2 * (ramp - ramp.mean())
    if style.speckle:
        image *= rng.gamma(1 / style.speckle**2, style.speckle**2, (size, size))
    image += rng.normal(0, style.noise, (size, size))
    return image.clip(0, 255).astype(np.uint8), classes


def _write_split(root: Path, site: int, split: int, count: int, seed: int, size: int) -> None:
    name = SYNTHETIC.domains[site]
    folder = root / name / ("train", "test")[split]
    raw = np.array([_RAW[0], _RAW[1], _RAW[2]], np.uint8)
    for sub in (SYNTHETIC.image_subdir, SYNTHETIC.mask_subdir):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, classes = render(np.random.default_rng([seed, site, split, i]), STYLES[name], size)
        Image.fromarray(image).save(folder / SYNTHETIC.image_subdir / f"{i:04d}.png")
        Image.fromarray(raw[classes]).save(folder / SYNTHETIC.mask_subdir / f"{i:04d}.png")


def generate_synthetic(
    root: str | Path,
    *,
    seed: int = 0,
    train_per_domain: int = 40,
    test_per_domain: int = 10,
    size: int = 256,
) -> Path:
    """Write the synthetic dataset under ``root`` and return ``root``.

    Layout: ``<root>/<site>/{train,test}/{image,mask}/NNNN.png``; gray images; masks 0 =
    background, 255 = organ, 128 = lesion (``specs.SYNTHETIC``). Nothing is written when
    ``root/synthetic.json`` records the same parameters; folders written by an earlier call with
    other parameters are replaced.

    Raises:
        FileExistsError: a site folder exists that this function did not write (no marker).
    """
    if min(train_per_domain, test_per_domain) < 1 or size < 32:
        raise ValueError(
            f"train_per_domain={train_per_domain}, test_per_domain={test_per_domain}, "
            f"size={size}: expected counts >= 1 and size >= 32"
        )
    root = Path(root)
    params = {
        "version": _VERSION,
        "seed": seed,
        "train_per_domain": train_per_domain,
        "test_per_domain": test_per_domain,
        "size": size,
        "styles": {name: asdict(style) for name, style in STYLES.items()},
    }
    marker = root / MARKER
    previous = json.loads(marker.read_text()) if marker.is_file() else None
    if (
        previous is not None
        and previous.get("complete")
        and previous["params"] == _jsonable(params)
    ):
        logger.info("%s is up to date (%s)", root, marker)
        return root
    for name in SYNTHETIC.domains:
        if (root / name).exists():
            if previous is None:
                raise FileExistsError(
                    f"{root / name}: exists but {marker} does not; expected an empty folder "
                    "or one written by generate_synthetic"
                )
            shutil.rmtree(root / name)
    root.mkdir(parents=True, exist_ok=True)
    # Written first as incomplete, so an interrupted run is regenerated, never trusted.
    marker.write_text(json.dumps({"complete": False, "params": params}, indent=1))
    for site in range(len(SYNTHETIC.domains)):
        _write_split(root, site, 0, train_per_domain, seed, size)
        _write_split(root, site, 1, test_per_domain, seed, size)
    marker.write_text(json.dumps({"complete": True, "params": params}, indent=1))
    logger.info("wrote synthetic data to %s", root)
    return root


def _jsonable(value: object) -> object:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic multi-domain demo dataset.")
    parser.add_argument("out_dir", help="folder to write (created if needed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_per_domain", type=int, default=40)
    parser.add_argument("--test_per_domain", type=int, default=10)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    args = parser.parse_args(argv)
    try:
        root = generate_synthetic(
            args.out_dir,
            seed=args.seed,
            train_per_domain=args.train_per_domain,
            test_per_domain=args.test_per_domain,
            size=args.size,
        )
    except (FileExistsError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"synthetic data in {root} ({len(SYNTHETIC.domains)} sites, seed {args.seed})")


if __name__ == "__main__":
    main()
