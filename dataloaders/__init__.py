"""Data layer: dataset specs, file discovery, decoding and cached multi-domain datasets."""

from dataloaders.datasets import (
    CachedSamples,
    DataError,
    DataSplits,
    SampleFiles,
    SegmentationDataset,
    SplitFiles,
    build_splits,
    build_test_sets,
    describe_splits,
    load_samples,
    plan_splits,
    scan_split,
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
