"""Several processes under ``torchrun``: ranks, the process group, and data-parallel gradient averaging.

``torchrun --nproc_per_node=K -m medsynth train|augment ...`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; without them everything runs in one process and nothing here communicates.

Training is data parallel like PyTorch DDP: every rank holds the same model, computes gradients
on its share of the batch, and the gradients are averaged before each optimizer step
(:meth:`Ranks.average_gradients`, one flat all-reduce per step and parameter group). It is done
in the trainer's ``optimize`` rather than by wrapping networks in ``DistributedDataParallel``
because a family's ``training_step`` calls its own sub-networks (a GAN alternates two); the
families stay unaware of ranks, and the arithmetic is DDP's. Backends: NCCL for CUDA training,
gloo otherwise (and for ``augment``, where only barriers travel).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ``world_size`` processes of a ``torchrun`` launch."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls, backend: str = "gloo") -> Ranks:
        """The ranks of this launch (one process without ``torchrun``), joining the process group."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        import torch.distributed as dist

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            if backend == "nccl":
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend)
        return cls(dist.get_rank(), dist.get_world_size(), local_rank)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes shared files (checkpoints, logs, merged manifests)."""
        return self.rank == 0

    @property
    def part(self) -> str | None:
        """Name of this rank's partial output (``None`` in a single process)."""
        return None if self.world_size == 1 else f"rank{self.rank}"

    def owns(self, index: int) -> bool:
        """Whether task ``index`` is this rank's (round robin: ranks get near-equal shares)."""
        return index % self.world_size == self.rank

    def share(self, batch_size: int) -> slice:
        """This rank's rows of a global batch of ``world_size * batch_size`` rows."""
        return slice(self.rank * batch_size, (self.rank + 1) * batch_size)

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def average_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over the ranks (what DDP's all-reduce does)."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if self.world_size == 1 or not grads:
            return
        import torch.distributed as dist

        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        for grad, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            grad.copy_(part.view_as(grad))

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the ranks (every rank must pass the same keys)."""
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        keys = sorted(values)
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        stacked = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(stacked)
        return {k: float(v) / self.world_size for k, v in zip(keys, stacked.tolist(), strict=True)}

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (e.g. a stop request that only one rank received)."""
        return bool(self.mean({"flag": float(flag)})["flag"] > 0)

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Make every rank's parameters and buffers equal to rank 0's."""
        if self.world_size == 1:
            return
        import torch.distributed as dist

        for tensor in module.state_dict().values():
            dist.broadcast(tensor, 0)
