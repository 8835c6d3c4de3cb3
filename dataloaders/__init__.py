"""Data layer: dataset specs, file discovery, decoding, cached multi-domain datasets, splits."""

from dataloaders.datasets import (
    CachedSamples,
    DataError,
    SampleFiles,
    SegmentationDataset,
    load_samples,
    scan_split,
)
from dataloaders.split_plan import SplitFiles, plan_splits
from dataloaders.split_report import describe_splits
from dataloaders.splits import DataSplits, build_splits, build_test_sets

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
