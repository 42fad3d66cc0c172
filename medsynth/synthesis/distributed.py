"""Scale-out under ``torchrun``: ranks split the inputs, write disjoint outputs, rank 0 merges.

``torchrun --nproc_per_node=K -m medsynth augment ...`` sets ``RANK``/``WORLD_SIZE``; a process
group (gloo: works on CPU and GPU hosts alike, and only barriers travel over it) synchronises the
end. Without those variables everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from medsynth.synthesis.outputs import OutputRecord


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_environment(cls) -> Ranks:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def part(self) -> str | None:
        """Name of this rank's partial manifest (``None`` in a single process)."""
        return None if self.world_size == 1 else f"rank{self.rank}"

    def owns(self, index: int) -> bool:
        """Whether task ``index`` is this rank's (round robin: ranks get near-equal shares)."""
        return index % self.world_size == self.rank

    def merge(self, record: OutputRecord) -> None:
        """Wait for every rank; rank 0 then writes the merged manifest and datalist."""
        if self.world_size == 1:
            return
        import torch.distributed as dist

        dist.barrier()
        if self.rank == 0:
            record.merge_parts()
        dist.barrier()
