"""Training on several processes: who this process is, and a gather that keeps gradients.

Under ``torchrun`` (or accelerate) transformers' Trainer starts the process group (gloo on CPUs, NCCL on GPUs)
and wraps the model in DistributedDataParallel, which averages gradients over processes. The embedder's
cross-device negatives gather every process's vectors with :func:`gather_with_grad`: its backward pass sums the
gradient over processes before keeping this process's slice, so that after DDP's average each process holds
the gradient of the loss over the global batch, the one a single process over that batch would compute.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the running group (1 outside distributed training)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 outside distributed training)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    """Wait for every process (nothing outside distributed training)."""
    if world_size() > 1:
        dist.barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every process (``value`` itself outside distributed training)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_process(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on any process (``flag`` itself outside distributed training)."""
    if world_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world_size())]
        dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
        counts = [int(size.item()) for size in sizes]
        if len(set(counts)) != 1:
            raise ValueError(f"cross-device negatives need the same batch on every process, got {counts}; make the "
                             "data a multiple of batch_size x processes or drop the last batch")
        parts = [torch.empty_like(tensor) for _ in counts]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.count = rank(), counts[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every process computed the same global loss: sum their gradients
        return grad[ctx.rank * ctx.count : (ctx.rank + 1) * ctx.count]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` concatenated along dim 0 in rank order; gradients flow back to each process's
    own part (see the module docstring for the scaling). The tensor itself outside distributed training."""
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)  # type: ignore[no-any-return]
