"""Adam / AdamW with torch's fused kernel, called directly once per step, and no `torch.optim.Optimizer`.

Measured on the MLP job of docs/BENCHMARKS.md (py-spy), for a small student on the CPU:
- torch's default Adam on the CPU is the per-tensor Python loop, slower than the student's own backward;
- `torch.optim.Adam(fused=True)` updates every tensor in one kernel call, but each `step()` also runs the
  optimizer's hooks, a profiler range and a regrouping of every tensor by device and dtype: two thirds of
  its time outside the kernel;
- constructing any `torch.optim.Optimizer` imports `torch._dynamo` (its methods are wrapped in
  `torch._disable_dynamo`, which imports it on first call): about a second of start-up on these CPUs.

This class holds the same state (`step`, `exp_avg`, `exp_avg_sq` per parameter), reads and writes the same
`state_dict` as `torch.optim.Adam(fused=True)` (so checkpoints move between the two), and calls the same
kernel (`torch._fused_adam_` / `torch._fused_adamw_`) with the same arguments, so its updates are
bit-identical (tests/engine/test_fused_adam.py compares them step by step). It covers what the engine asks
of an optimizer: `param_groups` (the schedule sets each group's lr), `step()`, `state_dict()`,
`load_state_dict()`. Parameters must be float tensors on one CPU or CUDA device (`build_optimizer` checks).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

BETAS = (0.9, 0.999)
EPS = 1e-8


class FusedAdam:
    def __init__(
        self, params: Iterable[Tensor], *, lr: float, weight_decay: float, decoupled_weight_decay: bool
    ) -> None:
        self.params = list(params)
        self.param_groups: list[dict[str, Any]] = [
            {
                "lr": lr, "betas": BETAS, "eps": EPS, "weight_decay": weight_decay, "amsgrad": False,
                "maximize": False, "foreach": None, "capturable": False, "differentiable": False, "fused": True,
                "decoupled_weight_decay": decoupled_weight_decay, "params": self.params,
            }
        ]  # fmt: skip
        self._kernel = torch._fused_adamw_ if decoupled_weight_decay else torch._fused_adam_
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of the parameters that have a gradient (as torch, a parameter without one is left
        alone and its step count does not move)."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        pick = (lambda xs: xs) if len(live) == len(self.params) else (lambda xs: [xs[i] for i in live])
        group = self.param_groups[0]
        grads = [g for i in live if (g := self.params[i].grad) is not None]
        steps = pick(self.steps)
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        self._kernel(
            pick(self.params), grads, pick(self.exp_avgs), pick(self.exp_avg_sqs), [],
            steps, amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
            eps=group["eps"], maximize=False, grad_scale=None, found_inf=None,
        )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.Adam's layout: parameters by index; a parameter that never stepped has no state."""
        state = {
            i: {"step": self.steps[i], "exp_avg": self.exp_avgs[i], "exp_avg_sq": self.exp_avg_sqs[i]}
            for i in range(len(self.params))
            if float(self.steps[i]) > 0
        }
        groups = [{**g, "params": list(range(len(self.params)))} for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Reads this class's and torch.optim.Adam's state dicts (same layout); tensors are copied in place."""
        (group,) = state_dict["param_groups"]
        if len(group["params"]) != len(self.params):
            raise ValueError(f"the state has {len(group['params'])} parameters, the optimizer {len(self.params)}")
        for key in ("lr", "betas", "eps", "weight_decay"):
            self.param_groups[0][key] = group[key]
        by_index = state_dict["state"]
        for slot, index in enumerate(group["params"]):
            entry = by_index.get(index)
            if entry is None:
                self.steps[slot].zero_()
                self.exp_avgs[slot].zero_()
                self.exp_avg_sqs[slot].zero_()
                continue
            self.steps[slot].copy_(torch.as_tensor(entry["step"], dtype=torch.float32))
            self.exp_avgs[slot].copy_(entry["exp_avg"])
            self.exp_avg_sqs[slot].copy_(entry["exp_avg_sq"])
