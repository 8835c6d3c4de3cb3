"""The SSL4MIS h5 layout (``DatasetSpec.layout == "h5_slices"``, e.g. ACDC).

``<root>/<list>`` files name the cases of each split (``spec.split_lists``). Training cases are
2-D slice files ``<slice dir>/<case>.h5`` (``spec.slice_dirs``: the first folder holding the file,
``data/slices`` in the original layout, ``data`` in flat copies) holding ``image`` float32
(H, W) in [0, 1] and ``label`` uint8 (H, W); validation and test cases are volumes
``<root>/<spec.image_subdir>/<case>.h5`` with ``image`` and ``label`` of shape (D, H, W).

Slices are resized to the training canvas like every other dataset (images bilinearly, then
quantised to uint8 as the shared cache stores them: an error of at most 1/510; labels
nearest-exact). Volumes keep their native in-plane size: evaluation predicts each slice at the
canvas and resizes the logits back (``evaluation.volumes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dataloaders.datasets import DataError, SampleFiles, check_mask_values
from dataloaders.geometry import resize_images, resize_masks
from dataloaders.specs import DatasetSpec

# Tolerance of the [0, 1] intensity check (float32 rounding of a min-max normalisation).
_RANGE_TOLERANCE = 1e-3


def _case_file(folders: Sequence[Path], case: str, where: str) -> Path:
    """``<folder>/<case>.h5`` in the first of ``folders`` holding it.

    Raises:
        DataError: naming ``where`` (list file and line) and every path tried.
    """
    for folder in folders:
        path = folder / f"{case}.h5"
        if path.is_file():
            return path
    expected = " or ".join(str(folder / f"{case}.h5") for folder in folders)
    raise DataError(f"{where}: {case} has no file; expected {expected}")


def scan_h5_split(spec: DatasetSpec, root: str | Path, split: str) -> list[SampleFiles]:
    """The cases of ``split`` in list order (the order decides which slices are labeled).

    Raises:
        DataError: a missing root or list file, an empty list, a listed case without its file.
    """
    lists = dict(spec.split_lists)
    if split not in lists:
        raise DataError(f"{spec.name}: split {split!r}; expected one of {', '.join(lists)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found; expected the {spec.name} folder")
    list_path = root / lists[split]
    if not list_path.is_file():
        raise DataError(f"{list_path}: list file not found; expected one case name per line")
    cases = list_path.read_text().split()
    if not cases:
        raise DataError(f"{list_path}: empty list; expected one case name per line")
    # Slices may sit in data/slices (SSL4MIS) or beside the volumes in data/.
    names = spec.slice_dirs if split == "train" else (spec.image_subdir,)
    folders = [root / name for name in names]
    samples = []
    for line, case in enumerate(cases, 1):
        path = _case_file(folders, case, f"{list_path} line {line}")
        samples.append(SampleFiles(f"{spec.domains[0]}/{case}", path, (path,)))
    return samples


def read_h5(spec: DatasetSpec, path: Path, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` float32 in [0, 1] and ``label`` uint8 class indices of one file, both of
    ``ndim`` dimensions ((H, W) slices, (D, H, W) volumes) and the same shape.

    Raises:
        DataError: naming the file: not an HDF5 file, a missing dataset, a wrong shape, values
            out of range.
    """
    import h5py

    image_key, label_key = spec.h5_keys
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in spec.h5_keys if key not in f]
            if missing:
                raise DataError(
                    f"{path}: no {', '.join(map(repr, missing))} dataset; expected datasets "
                    f"{image_key!r} and {label_key!r}"
                )
            image = np.asarray(f[image_key][()], dtype=np.float32)
            label = np.asarray(f[label_key][()])
    except OSError as error:
        raise DataError(f"{path}: cannot read HDF5 file ({error}); expected an h5 file") from None
    if image.ndim != ndim or image.shape != label.shape:
        raise DataError(
            f"{path}: image {image.shape} and label {label.shape}; expected two arrays of the "
            f"same {ndim}-D shape"
        )
    if image.size and (image.min() < -_RANGE_TOLERANCE or image.max() > 1 + _RANGE_TOLERANCE):
        raise DataError(
            f"{path}: image values {image.min():.4g}..{image.max():.4g}; expected [0, 1]"
        )
    return image.clip(0, 1), check_mask_values(spec, label, path)


def _to_canvas(image: np.ndarray, canvas_size: int) -> torch.Tensor:
    """(K, H, W) float in [0, 1] -> (K, 1, S, S) uint8 at the canvas size."""
    resized = resize_images(torch.from_numpy(image)[:, None], canvas_size)
    return resized.mul(255).round_().clamp_(0, 255).to(torch.uint8)


def decode_h5_slice(
    spec: DatasetSpec, sample: SampleFiles, canvas_size: int, mask_size: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """One training slice: image (1, S, S) uint8, label (M, M) uint8, native (W, H)."""
    image, label = read_h5(spec, sample.image, ndim=2)
    pixels = _to_canvas(image[None], canvas_size)[0].numpy()
    mask = resize_masks(torch.from_numpy(label)[None], mask_size)[0].numpy()
    return pixels, mask, (image.shape[1], image.shape[0])


@dataclass
class VolumeDataset:
    """Whole evaluation volumes of one domain, kept in memory.

    Item i: ``image`` (D, 1, S, S) uint8 (each slice at the canvas size S), ``mask`` (D, H, W)
    uint8 class indices at the native size, ``name`` ``"<domain>/<case>"``; D, H, W vary.
    """

    names: list[str]
    images: list[torch.Tensor]
    masks: list[torch.Tensor]
    domain: int

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "mask": self.masks[i], "name": self.names[i]}

    @property
    def slice_count(self) -> int:
        return sum(m.shape[0] for m in self.masks)

    @property
    def native_sizes(self) -> list[tuple[int, int]]:
        """(W, H) of every volume."""
        return [(m.shape[2], m.shape[1]) for m in self.masks]


def load_volumes(
    spec: DatasetSpec,
    files: Sequence[SampleFiles],
    domain: int,
    *,
    canvas_size: int,
    num_workers: int = 4,
) -> VolumeDataset:
    """Read and check every volume of ``files`` (see :class:`VolumeDataset`), in a thread pool.

    Raises:
        DataError: naming the first bad file.
    """

    def load(sample: SampleFiles) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = read_h5(spec, sample.image, ndim=3)
        return _to_canvas(image, canvas_size), torch.from_numpy(label)

    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        loaded = list(pool.map(load, files))
    return VolumeDataset(
        [f.name for f in files], [i for i, _ in loaded], [m for _, m in loaded], domain
    )
