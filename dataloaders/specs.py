"""Dataset specifications: the only place where facts about a dataset live.

A :class:`DatasetSpec` says where a dataset's files are, how its raw mask pixels decode to class
indices, which regions are evaluated, and the per-dataset constants of the reference
implementation (patch size, augmentation ranges, iteration count). Code elsewhere reads these
fields; it never branches on a dataset's name. Adding a dataset means adding one spec here and one
config in ``configs/``.

Facts are taken from the authors' code (the constants of its ``train.py``, its Dataset classes
and ``custom_transforms.py``) and checked by ``tests/test_specs.py`` against the real sample
files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# A raw mask pixel: a gray level (mode "L") or an (R, G, B) triple (mode "RGB").
RawValue = int | tuple[int, int, int]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the code needs to know about one multi-domain dataset.

    Class indices: 0 is background, 1..C are the foreground classes of ``class_names``; networks
    output C+1 channels. Evaluation and the confidence Dice of SMC work on ``eval_regions``, each a
    union of class indices (fundus: cup = {1}, whole disc = {1, 2}).
    """

    name: str
    # Folder names, in the reference's order; ``--lb_domain K`` is 1-based into this tuple.
    domains: tuple[str, ...]
    # Names printed in tables (e.g. fundus Domain1 is Drishti-GS).
    domain_titles: tuple[str, ...]
    # "split_folders": <root>/<domain>/{train,test}/<image_subdir|mask_subdir>/<name>.png, masks
    #     share the image's file name.
    # "class_folders": <root>/<domain>/<stem>.png with masks <stem><mask_suffix>*.png (several
    #     are merged by pixel-wise max); the last ``test_fraction`` of the sorted samples is the
    #     test set.
    # "h5_slices" (SSL4MIS): one domain; <root>/<list> names the cases of each split (see
    #     ``split_lists``); train cases are 2-D slice files in the first folder of ``slice_dirs``
    #     that holds them, val/test cases are volumes <root>/<image_subdir>/<case>.h5; each h5
    #     holds the datasets of ``h5_keys`` (image float in [0, 1], label uint8 class indices).
    layout: Literal["split_folders", "class_folders", "h5_slices"]
    image_subdir: str
    mask_subdir: str
    mask_suffix: str
    test_fraction: float
    # 1 = grayscale (PIL "L"), 3 = RGB.
    in_channels: int
    # Mode the mask file is converted to before decoding ("L" gray levels or "RGB" colours).
    mask_mode: Literal["L", "RGB"]
    # Exact raw value -> class index; any other value in a mask file is an error.
    mask_encoding: tuple[tuple[RawValue, int], ...]
    class_names: tuple[str, ...]
    eval_regions: tuple[tuple[str, tuple[int, ...]], ...]
    # U-Net input size and the resolution at which metrics are computed.
    patch_size: int
    # Input size of a ViT SAM/MedSAM foundation model (LiteMedSAM uses its own 256).
    foundation_size: int
    # PIL resampling used to bring images onto the square canvas ("lanczos" or "bilinear").
    image_resample: Literal["lanczos", "bilinear"]
    # Range of the brightness and of the contrast factor of the strong augmentation.
    intensity_range: tuple[float, float]
    # Raw mask value the reference fills in when rotating; decodes to background everywhere.
    rotation_fill: RawValue
    # Training length of the paper for this dataset.
    max_iterations: int
    # Per-domain training-set sizes hard-coded in the reference (``domain_len``); only a sanity
    # reference for the data check, never used to select files.
    reference_train_counts: tuple[int, ...]
    # Only for the "h5_slices" layout: split -> list file, slice folders in order of preference,
    # names of the image and label datasets.
    split_lists: tuple[tuple[str, str], ...] = ()
    slice_dirs: tuple[str, ...] = ()
    h5_keys: tuple[str, str] = ("image", "label")
    # "images": data.lb_num counts images; "patients": it counts patients, turned into the first
    # N slices of the train list by ``patient_slices`` (patients -> slices).
    labeled_unit: Literal["images", "patients"] = "images"
    patient_slices: tuple[tuple[int, int], ...] = ()
    # "slice": metrics per 2-D image at patch size; "volume": per whole volume at native size.
    eval_unit: Literal["slice", "volume"] = "slice"

    @property
    def num_classes(self) -> int:
        """Number of foreground classes C (networks output C + 1 channels)."""
        return len(self.class_names)

    @property
    def region_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.eval_regions)

    @property
    def rotation_fill_class(self) -> int:
        """Class index of the rotation fill value (0 = background for every dataset here)."""
        return dict(self.mask_encoding)[self.rotation_fill]

    def labeled_images(self, lb_num: int) -> int:
        """Labeled images (slices) for ``lb_num`` in the spec's ``labeled_unit``.

        Raises:
            ValueError: a patient count that ``patient_slices`` does not list.
        """
        if self.labeled_unit == "images":
            return lb_num
        table = dict(self.patient_slices)
        if lb_num not in table:
            raise ValueError(
                f"{self.name}: lb_num={lb_num} patients; expected one of {sorted(table)} (the "
                "patient -> slice table of SSL4MIS)"
            )
        return table[lb_num]

    def domain_index(self, domain: int | str) -> int:
        """0-based index of a domain given as a 1-based number, a folder name or a title.

        Raises:
            ValueError: naming the valid choices, if ``domain`` is none of them.
        """
        if isinstance(domain, str) and domain.isdigit():
            domain = int(domain)
        if isinstance(domain, int):
            if 1 <= domain <= len(self.domains):
                return domain - 1
        else:
            for names in (self.domains, self.domain_titles):
                lowered = [n.lower() for n in names]
                if domain.lower() in lowered:
                    return lowered.index(domain.lower())
        choices = ", ".join(f"{i + 1}={d}" for i, d in enumerate(self.domains))
        raise ValueError(f"{self.name}: unknown domain {domain!r}; expected one of {choices}")


PROSTATE = DatasetSpec(
    name="prostate",
    domains=("BIDMC", "BMC", "HK", "I2CVB", "RUNMC", "UCL"),
    domain_titles=("BIDMC", "BMC", "HK", "I2CVB", "RUNMC", "UCL"),
    layout="split_folders",
    image_subdir="image",
    mask_subdir="mask",
    mask_suffix="",
    test_fraction=0.0,
    in_channels=1,
    mask_mode="L",
    # The prostate is stored black (0) on white (255).
    mask_encoding=((0, 1), (255, 0)),
    class_names=("prostate",),
    eval_regions=(("prostate", (1,)),),
    patch_size=384,
    foundation_size=512,
    image_resample="lanczos",
    intensity_range=(0.1, 2.0),
    rotation_fill=255,
    max_iterations=60000,
    reference_train_counts=(225, 305, 136, 373, 338, 133),
)

FUNDUS = DatasetSpec(
    name="fundus",
    domains=("Domain1", "Domain2", "Domain3", "Domain4"),
    domain_titles=("Drishti-GS", "RIM-ONE-r3", "REFUGE-train", "REFUGE-val"),
    layout="split_folders",
    image_subdir="ROIs/image",
    mask_subdir="ROIs/mask",
    mask_suffix="",
    test_fraction=0.0,
    in_channels=3,
    mask_mode="L",
    # 0 = optic cup, 128 = disc rim (disc minus cup), 255 = background.
    mask_encoding=((0, 1), (128, 2), (255, 0)),
    class_names=("cup", "rim"),
    # Evaluated as cup and whole disc (cup included), as the paper and reference do.
    eval_regions=(("cup", (1,)), ("disc", (1, 2))),
    patch_size=256,
    foundation_size=512,
    image_resample="lanczos",
    intensity_range=(0.5, 1.5),
    rotation_fill=255,
    max_iterations=30000,
    reference_train_counts=(50, 99, 320, 320),
)

MNMS = DatasetSpec(
    name="mnms",
    domains=("vendorA", "vendorB", "vendorC", "vendorD"),
    domain_titles=("vendorA", "vendorB", "vendorC", "vendorD"),
    layout="split_folders",
    image_subdir="image",
    mask_subdir="mask",
    mask_suffix="",
    test_fraction=0.0,
    in_channels=1,
    mask_mode="RGB",
    # Pure red / green / blue = left ventricle / myocardium / right ventricle.
    mask_encoding=(((0, 0, 0), 0), ((255, 0, 0), 1), ((0, 255, 0), 2), ((0, 0, 255), 3)),
    class_names=("LV", "MYO", "RV"),
    eval_regions=(("LV", (1,)), ("MYO", (2,)), ("RV", (3,))),
    patch_size=288,
    foundation_size=512,
    image_resample="bilinear",
    intensity_range=(0.1, 2.0),
    rotation_fill=(0, 0, 0),
    max_iterations=60000,
    reference_train_counts=(1030, 1342, 525, 550),
)

BUSI = DatasetSpec(
    name="busi",
    domains=("benign", "malignant"),
    domain_titles=("benign", "malignant"),
    layout="class_folders",
    image_subdir="",
    mask_subdir="",
    mask_suffix="_mask",
    test_fraction=0.2,
    in_channels=1,
    mask_mode="L",
    mask_encoding=((0, 0), (255, 1)),
    class_names=("lesion",),
    eval_regions=(("lesion", (1,)),),
    patch_size=256,
    foundation_size=512,
    image_resample="lanczos",
    intensity_range=(0.1, 2.0),
    rotation_fill=0,
    max_iterations=30000,
    reference_train_counts=(350, 168),
)

# Procedural demo data written by ``dataloaders/synthetic.py``; small enough to train on a CPU.
SYNTHETIC = DatasetSpec(
    name="synthetic",
    domains=("siteA", "siteB", "siteC"),
    domain_titles=("siteA", "siteB", "siteC"),
    layout="split_folders",
    image_subdir="image",
    mask_subdir="mask",
    mask_suffix="",
    test_fraction=0.0,
    in_channels=1,
    mask_mode="L",
    mask_encoding=((0, 0), (255, 1), (128, 2)),
    class_names=("organ", "lesion"),
    eval_regions=(("organ", (1,)), ("lesion", (2,))),
    patch_size=128,
    foundation_size=256,
    image_resample="bilinear",
    intensity_range=(0.5, 1.5),
    rotation_fill=0,
    max_iterations=600,
    reference_train_counts=(),
)

# ACDC cine-MRI (Bernard et al. 2018) as preprocessed by SSL4MIS (Luo et al.): 2-D training
# slices, whole validation / test volumes; plain semi-supervised segmentation (one domain).
ACDC = DatasetSpec(
    name="acdc",
    domains=("ACDC",),
    domain_titles=("ACDC",),
    layout="h5_slices",
    image_subdir="data",
    mask_subdir="data",
    mask_suffix="",
    test_fraction=0.0,
    in_channels=1,
    mask_mode="L",
    mask_encoding=((0, 0), (1, 1), (2, 2), (3, 3)),
    class_names=("RV", "MYO", "LV"),
    eval_regions=(("RV", (1,)), ("MYO", (2,)), ("LV", (3,))),
    # SSL4MIS trains and predicts at 256 x 256.
    patch_size=256,
    foundation_size=512,
    image_resample="bilinear",
    intensity_range=(0.1, 2.0),
    rotation_fill=0,
    # Not stated in our documents for the paper's SSMIS setting; 30k as SSL4MIS' ACDC runs.
    max_iterations=30000,
    # Training slices of the full SSL4MIS set (140 volumes of 70 patients).
    reference_train_counts=(1312,),
    split_lists=(("train", "train_slices.list"), ("val", "val.list"), ("test", "test.list")),
    slice_dirs=("data/slices", "data"),
    labeled_unit="patients",
    # SSL4MIS ``patients_to_slices`` for ACDC.
    patient_slices=((3, 68), (7, 136), (14, 256), (21, 396), (28, 512), (35, 664), (140, 1312)),
    eval_unit="volume",
)

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (PROSTATE, FUNDUS, MNMS, BUSI, ACDC, SYNTHETIC)
}


def get_spec(name: str) -> DatasetSpec:
    """The spec registered under ``name`` (case-insensitive).

    Raises:
        KeyError: naming the registered datasets.
    """
    key = name.lower()
    if key not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[key]
