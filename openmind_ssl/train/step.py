"""One optimizer step, as pretraining and fine-tuning both take it: the forward pass under
autocast (bf16 or fp16 on CUDA; fp32 on the CPU), the backward pass (through a gradient scaler
for fp16), gradient-norm clipping, the optimizer step."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["AMP_DTYPES", "OptimizerStep"]

#: ``train.amp`` -> the autocast dtype ("none": full precision).
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class OptimizerStep:
    """Mixed precision and the step for a run on ``device`` with ``amp`` ("bf16", "fp16",
    "none"): ``begin`` before the forward pass, the forward pass inside ``autocast()``, then
    ``finish`` with the loss. ``scaler`` (fp16 only) belongs in the run's checkpoints."""

    def __init__(self, device: torch.device, amp: str) -> None:
        on_cuda = device.type == "cuda"
        self.autocast_dtype = AMP_DTYPES.get(amp) if on_cuda else None
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype is torch.float16 else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.autocast_dtype)

    def begin(self, optimizer: torch.optim.Optimizer, lr: float) -> None:
        """Set every parameter group's rate to ``lr`` and clear the gradients."""
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)

    def finish(
        self,
        loss: Tensor,
        optimizer: torch.optim.Optimizer,
        parameters: Iterable[nn.Parameter],
        grad_clip: float,
    ) -> Tensor:
        """Backward from ``loss``, clip the gradients of ``parameters`` to the norm
        ``grad_clip`` (0: no clipping), step ``optimizer``; the gradients' norm before
        clipping (0 without clipping)."""
        if self.scaler is not None:
            torch.autograd.backward(self.scaler.scale(loss))
            self.scaler.unscale_(optimizer)
        else:
            torch.autograd.backward(loss)
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
            if grad_clip > 0
            else torch.zeros(())
        )
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        return grad_norm
