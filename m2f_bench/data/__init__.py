"""Face datasets: records, identity folds, verification pairs and splits."""

from __future__ import annotations

from m2f_bench.data.base import FaceDataset, FaceRecord, Pair
from m2f_bench.registry import Registry

#: Dataset classes by name; third parties add theirs through ``m2f_bench.datasets``.
DATASETS: Registry[type[FaceDataset]] = Registry("dataset", "m2f_bench.datasets")
DATASETS.register_lazy("lfw", "m2f_bench.data.lfw:LFW")
DATASETS.register_lazy("celeba", "m2f_bench.data.celeba:CelebA")
DATASETS.register_lazy("celebahq", "m2f_bench.data.celebahq:CelebAHQ")
DATASETS.register_lazy("folder", "m2f_bench.data.folder:IdentityFolder")
DATASETS.register_lazy("masked-folder", "m2f_bench.data.masked_folder:MaskedFolder")
DATASETS.register_lazy("demo", "m2f_bench.data.demo:DemoFaces")

__all__ = ["DATASETS", "FaceDataset", "FaceRecord", "Pair"]
