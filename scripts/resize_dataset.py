r"""Write a copy of a dataset with every image and mask resized to a square size.

    python scripts/resize_dataset.py --dataset busi --root ../data/Dataset_BUSI_with_GT \
        --out .busi256 --size 256

The copy keeps the native layout (same relative paths), so the same loader reads it. Images are
resized with the spec's resampling filter and masks with nearest neighbour, which is what the
loader does itself: for a run whose canvas and patch size both equal ``--size`` (BUSI with
LiteMedSAM: 256) training on the copy is the same as training on the originals. Its use is to
make a full dataset small enough to copy to another machine quickly (full BUSI: ~87 MB; at
256 px: ~25 MB). Do not use it for runs at a larger canvas (ViT-B at 512).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.datasets import DataError, scan_split  # noqa: E402
from dataloaders.specs import DatasetSpec, get_spec  # noqa: E402

RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR}


def resize_dataset(spec: DatasetSpec, root: Path, out: Path, size: int) -> int:
    """Resize every sample of every domain and split into ``out``; returns the sample count."""
    image_mode = "L" if spec.in_channels == 1 else "RGB"
    count = 0
    for domain in range(len(spec.domains)):
        for split in ("train", "test"):
            for sample in scan_split(spec, root, domain, split):
                _resize(sample.image, root, out, size, image_mode, RESAMPLE[spec.image_resample])
                for mask in sample.masks:
                    _resize(mask, root, out, size, spec.mask_mode, Image.Resampling.NEAREST)
                count += 1
    return count


def _resize(
    path: Path, root: Path, out: Path, size: int, mode: str, resample: Image.Resampling
) -> None:
    """Convert to the mode the loader uses, then resize: the loader's own order of operations,
    so that it reads the copy back unchanged (PIL skips resampling at equal size)."""
    target = out / path.relative_to(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as image:
        image.convert(mode).resize((size, size), resample).save(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args(argv)
    try:
        spec = get_spec(args.dataset)
        count = resize_dataset(spec, args.root, args.out, args.size)
    except (DataError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {count} samples of {spec.name} at {args.size} px to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
