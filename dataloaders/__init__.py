"""Data layer: dataset specs, file discovery, decoding, cached multi-domain datasets, splits."""

from dataloaders.datasets import (
    CachedSamples,
    DataError,
    SampleFiles,
    SegmentationDataset,
    load_samples,
    scan_split,
)
from dataloaders.splits import (
    DataSplits,
    SplitFiles,
    build_splits,
    build_test_sets,
    describe_splits,
    plan_splits,
)

__all__ = [
    "CachedSamples",
    "DataError",
    "DataSplits",
    "SampleFiles",
    "SegmentationDataset",
    "SplitFiles",
    "build_splits",
    "build_test_sets",
    "describe_splits",
    "load_samples",
    "plan_splits",
    "scan_split",
]
