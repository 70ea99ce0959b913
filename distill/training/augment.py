"""Per-step input augmentation. Any of these makes cached teacher logits stale, so the teacher runs live."""

from __future__ import annotations

import torch
from torch import Tensor


def augment(x: Tensor, kind: str, generator: torch.Generator) -> Tensor:
    if kind == "noise":
        # Small Gaussian noise relative to the batch's scale; inputs are typically in [0, 1].
        noise = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
        return x + 0.05 * noise * x.detach().std().clamp_min(1e-6)
    if kind == "shift" and x.dim() == 4:
        # Shift every image of the batch by the same random (dy, dx) in {-1, 0, 1}², zero-filled.
        dy, dx = (int(v) - 1 for v in torch.randint(0, 3, (2,), generator=generator))
        shifted = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        if dy:
            shifted[:, :, 0 if dy > 0 else -1, :] = 0
        if dx:
            shifted[:, :, :, 0 if dx > 0 else -1] = 0
        return shifted
    return x
