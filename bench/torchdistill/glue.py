"""What torchdistill 1.1.5 needs to run the benchmark's job through its own pipeline, and nothing else.

- `NpzDataset`: the same .npz arrays (x float32 (N, C, H, W), y int64 (N,)) the Distillery job reads; the
  YAML config builds it with torchdistill's `!import_call` tag, so no dataset is downloaded.
- `distillery_mlp`: Distillery's `mlp` (same module paths), for `bench/mlp_job.py`.
- `distillery_cnn`: the teacher and student architecture, registered in torchdistill's model registry
  (`torchdistill.models.registry.register_model`). It rebuilds the module tree of Distillery's `cnn`
  (`distill/models/cnn.py`) with the same module paths — features.block1 … block{k} (conv3×3 without
  bias, BatchNorm, ReLU, 2×2 max-pool), global average pool, embedding (Linear, ReLU, Dropout), fc — so the
  teacher's state dict loads with strict=True and the config names the same layers the Distillery job
  names. It is written here, not imported, because this venv does not have our engine. Like `cnn`, it
  takes `head` ("pool", the default, or "flatten": the classifier reads all C·H'·W' conv outputs) and
  `batch_norm` (True, the default; False gives each conv a bias and no BatchNorm), which the classic
  4,266-parameter student of `bench/cnn_job.py` uses (channels [4, 8], hidden 0, flatten, no BatchNorm).

The config imports this module through its `dependencies` key (torchdistill's `import_dependencies`).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchdistill.models.registry import register_model


class NpzDataset(Dataset):
    """(x[i], y[i]) from an .npz file, held in memory as tensors."""

    def __init__(self, path: str) -> None:
        with np.load(path) as data:
            self.x = torch.from_numpy(np.ascontiguousarray(data["x"], dtype=np.float32))
            self.y = torch.from_numpy(np.ascontiguousarray(data["y"], dtype=np.int64))
        self.targets = self.y.tolist()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.x[index], self.y[index]


class SmallCNN(nn.Module):
    """Module tree and forward of Distillery's `cnn` (see the module docstring)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        channels: list[int],
        hidden: int,
        dropout: float,
        head: str = "pool",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for i, out_channels in enumerate(channels, start=1):
            layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
            if min(height, width) >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            blocks[f"block{i}"] = nn.Sequential(*layers)
            in_channels = out_channels
        self.features = nn.Sequential(blocks)
        if head == "pool":
            self.pool: nn.Module = nn.AdaptiveAvgPool2d(1)
        elif head == "flatten":
            self.pool = nn.Identity()
            in_channels *= height * width  # the flatten below yields C·H'·W' features
        else:
            raise ValueError(f"head must be 'pool' or 'flatten', got {head!r}")
        self.flatten = nn.Flatten()
        if hidden > 0:
            self.embedding: nn.Module = nn.Sequential(
                nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)
            )
            in_channels = hidden
        else:
            self.embedding = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(self.pool(self.features(x)))  # (N, channels[-1]) pooled, (N, C·H'·W') flattened
        return self.fc(self.embedding(x))  # (N, num_classes)


@register_model(key="distillery_cnn")
def distillery_cnn(
    input_shape: list[int],
    num_classes: int,
    channels: list[int],
    hidden: int = 64,
    dropout: float = 0.0,
    head: str = "pool",
    batch_norm: bool = True,
    frozen: bool = False,
) -> nn.Module:
    """The registry entry the YAML names. frozen=True (the teacher) returns it in eval mode: torchdistill
    1.1.5 never changes a teacher's mode, and a frozen teacher should use its BatchNorm running statistics,
    as Distillery's does (and RepDistiller's `model_t.eval()`)."""
    c, h, w = (int(v) for v in input_shape)
    model = SmallCNN(
        (c, h, w),
        int(num_classes),
        [int(v) for v in channels],
        int(hidden),
        float(dropout),
        str(head),
        bool(batch_norm),
    )
    return model.eval() if frozen else model


class SmallMLP(nn.Module):
    """Module tree and forward of Distillery's `mlp` (`distill/models/mlp.py`): flatten, blocks.i (Linear,
    ReLU, Dropout), fc, so a Distillery state dict loads with strict=True."""

    def __init__(self, in_features: int, num_classes: int, hidden: list[int], dropout: float) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        blocks: list[nn.Module] = []
        width = in_features
        for h in hidden:
            blocks.append(nn.Sequential(nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)))
            width = h
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.blocks(self.flatten(x)))  # (N, num_classes)


@register_model(key="distillery_mlp")
def distillery_mlp(
    input_shape: list[int], num_classes: int, hidden: list[int], dropout: float = 0.0, frozen: bool = False
) -> nn.Module:
    """The registry entry for `bench/mlp_job.py`'s teacher and student (frozen=True: the teacher, in eval mode)."""
    model = SmallMLP(int(np.prod(input_shape)), int(num_classes), [int(v) for v in hidden], float(dropout))
    return model.eval() if frozen else model


class DistilleryOrderSampler(torch.utils.data.Sampler[int]):
    """For the equivalence check only: yields, epoch after epoch, the shuffle order Distillery's training loop
    uses (`distill/training/loop.py`: randperm with a generator seeded by seed · 1,000,003 + epoch), so both
    pipelines see the same batches. The main comparison uses torchdistill's own RandomSampler."""

    def __init__(self, data_source: Dataset, seed: int) -> None:
        self.n, self.seed, self.epoch = len(data_source), int(seed), 0  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.n

    def __iter__(self):  # type: ignore[no-untyped-def]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        return iter(torch.randperm(self.n, generator=generator).tolist())
