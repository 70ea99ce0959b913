"""Data: checked `.npz` files and built-in datasets in, a train/validation `DataSplit` out.

Tensors stay on the CPU as float32 (N, ...) inputs and int64 (N,) labels, -1 marking an unlabeled example;
the training loop moves batches to the device.
"""

from distill.data.arrays import UNLABELED, ArrayDataset, describe_array_file, load_array_file
from distill.data.builtin import BUILTIN_PREFIX, DATASETS, builtin_name
from distill.data.loading import DataSplit, load_data, load_reference, split_indices

__all__ = [
    "BUILTIN_PREFIX",
    "DATASETS",
    "UNLABELED",
    "ArrayDataset",
    "DataSplit",
    "builtin_name",
    "describe_array_file",
    "load_array_file",
    "load_data",
    "load_reference",
    "split_indices",
]
