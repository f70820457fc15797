"""Data-parallel training of one fold with PyTorch DDP, started by ``torchrun``.

``torchrun --nproc_per_node N -m RICENetLib.cli train ... --fold k`` starts N
processes; each one finds its rank in the environment torchrun sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), joins the process group (NCCL on
GPUs, gloo on CPUs) and trains on its share of every global batch. The
global batch is ``N × --batch-size``; gradients are averaged across ranks,
so N processes with batch b follow the same sample order and augmentation as
one process with batch N·b. (Batch-norm statistics are still computed per
process, over b samples: the one way the two differ. PyTorch's SyncBatchNorm
would share them, but only on GPUs.) Only rank 0 writes checkpoints, logs and
the bundle; validation cases are split across ranks and the results summed. Without those variables (a plain ``ricenet train``) nothing here is
used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel group (``world_size`` 1 when alone)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def collective_device(self) -> torch.device:
        """NCCL reduces GPU tensors, gloo CPU tensors."""
        import torch.distributed as dist

        return self.device if self.active and dist.get_backend() == "nccl" else torch.device("cpu")

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return tensor
        import torch.distributed as dist

        reduced = tensor.to(self.collective_device())
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced.to(tensor.device)

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm running statistics).

        DDP does this at the start of each training forward pass, but after
        the last one each rank has updated its own; validation and the saved
        model must all use rank 0's.
        """
        if not self.active:
            return
        import torch.distributed as dist

        for buffer in model.buffers():
            shared = buffer.detach().to(self.collective_device())
            dist.broadcast(shared, src=0)
            buffer.data.copy_(shared.to(buffer.device))

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device: torch.device) -> DistContext:
    """Join the process group torchrun describes; a single process gets the trivial context.

    On CUDA each rank takes the GPU of its ``LOCAL_RANK``.
    """
    if not launched_by_torchrun():
        return DistContext(0, 1, device)
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), device)


def shutdown(context: DistContext) -> None:
    if context.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def wrap(model: torch.nn.Module, context: DistContext) -> torch.nn.Module:
    """The model as DDP sees it (rank 0's weights are broadcast to every rank here)."""
    if not context.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[context.device.index] if context.device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)
