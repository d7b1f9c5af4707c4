"""Which images a step sees, and their augmentation, as pure functions of (seed, epoch, step).

This is what makes `resume=true` step-exact and a run independent of the number of processes,
accumulation micro-batches and DataLoader workers:

- Epoch `e` visits the images in the order `randperm(n, seed + e)`. The global batch of step `s`
  is the slice `[s * B, (s + 1) * B)` of that order (B = the recipe's global batch); it is cut
  into `world * grad_accum` micro-batches of `m` images, and process `r` takes micro-batch
  `a * world + r` for accumulation round `a`. A resumed run starts the sampler at its step: no
  image is loaded twice or skipped, and nothing is decoded to fast-forward.
- Each sample carries its own seed, a hash of (seed, epoch, index); the random augmentation of
  that sample runs under `torch.manual_seed(sample_seed)` (in a forked RNG, so the global stream
  that drives masks and dropout is never touched). The same image in the same epoch therefore
  gets the same views whichever worker or process loads it, before or after a resume.
- The DataLoader gets its own seeded generator: creating an iterator then draws nothing from
  the global RNG (a mid-epoch resume creates its iterator at a different point than the
  uninterrupted run did).

Example:
    >>> from train.sampling import StepSampler
    >>> s = StepSampler(10, batch_size=4, micro_batch=2, world=1, rank=0, seed=0)
    >>> s.set_position(epoch=0, step=1)
    >>> [i for i, _ in s]      # step 1 of epoch 0: two micro-batches of 2 (the last 2 images are dropped)
    [3, 9, 0, 8]
"""
from __future__ import annotations

import hashlib

import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation, independent of where it is loaded."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
    return torch.randperm(n, generator=g)


class StepSampler(Sampler):
    """Yields `(index, sample_seed)` for this process's micro-batches, from a given step to the epoch end."""

    def __init__(self, n: int, batch_size: int, micro_batch: int, world: int, rank: int, seed: int):
        if batch_size % (micro_batch * world):
            raise ValueError(f"batch {batch_size} is not micro_batch {micro_batch} x world {world} x accum")
        self.n, self.batch_size, self.micro_batch = n, batch_size, micro_batch
        self.world, self.rank, self.seed = world, rank, seed
        self.accum = batch_size // (micro_batch * world)
        self.steps_per_epoch = n // batch_size
        self.epoch, self.step = 0, 0

    def set_position(self, epoch: int, step: int) -> None:
        """Start at optimizer step `step` (within the epoch) of epoch `epoch`."""
        self.epoch, self.step = epoch, step

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.step) * self.accum * self.micro_batch

    def __iter__(self):
        order = epoch_order(self.n, self.seed, self.epoch).tolist()
        m = self.micro_batch
        for s in range(self.step, self.steps_per_epoch):
            for a in range(self.accum):
                start = s * self.batch_size + (a * self.world + self.rank) * m
                for index in order[start:start + m]:
                    yield index, sample_seed(self.seed, self.epoch, index)


class SeededSamples(Dataset):
    """`dataset[index]` computed under the sample's own seed (StepSampler yields (index, seed))."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed also queues a lazy CUDA seeding with a
            # stack trace on CUDA builds, ~1 ms per sample (as long as the augmentation itself)
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]
