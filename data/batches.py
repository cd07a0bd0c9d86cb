"""Batches: (batch, block_size) input/target windows drawn from a split's flat token array.

The windows of optimizer update t are a pure function of (seed, t): ``grad_accum × world × batch`` random
offsets drawn from a generator seeded with (seed, t). Micro-batch m of rank r takes row (m, r) of them. So a
resumed run sees exactly the batches it would have seen, N ranks together see the windows one process sees
with the same global batch, and no sampler state needs saving. Validation uses fixed, evenly spaced windows.
"""

from __future__ import annotations

import numpy as np
import torch

from training.errors import ConfigError


def check_length(tokens: np.ndarray, block_size: int, split: str) -> None:
    if len(tokens) < block_size + 1:
        raise ConfigError(
            f"data: the {split} split has {len(tokens)} tokens, fewer than one window of model.block_size + 1 "
            f"= {block_size + 1}; use more text or a smaller model.block_size"
        )


def window_offsets(seed: int, t: int, count: int, n_tokens: int, block_size: int) -> np.ndarray:
    """``count`` window starts in [0, n_tokens − block_size − 1], a function of (seed, t) alone."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, t])))
    return rng.integers(0, n_tokens - block_size, size=count, dtype=np.int64)


def gather(tokens: np.ndarray, offsets: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x and targets y (len(offsets), block_size), int64; y is x shifted by one token."""
    windows = tokens[offsets[:, None] + np.arange(block_size + 1)].astype(np.int64)
    w = torch.from_numpy(windows)
    return w[:, :-1], w[:, 1:]


class TrainBatches:
    """The micro-batches of each update for one rank."""

    def __init__(
        self,
        tokens: np.ndarray,
        block_size: int,
        batch_size: int,
        grad_accum_steps: int = 1,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
    ):
        check_length(tokens, block_size, "train")
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.accum, self.world, self.rank, self.seed = grad_accum_steps, world_size, rank, seed

    @property
    def tokens_per_update(self) -> int:
        """Tokens of one optimizer update over all ranks."""
        return self.accum * self.world * self.batch_size * self.block_size

    def offsets(self, t: int) -> np.ndarray:
        """All window starts of update t, shaped (grad_accum, world, batch)."""
        count = self.accum * self.world * self.batch_size
        starts = window_offsets(self.seed, t, count, len(self.tokens), self.block_size)
        return starts.reshape(self.accum, self.world, self.batch_size)

    def micro_batches(self, t: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's (x, y) for each micro-step of update t."""
        offsets = self.offsets(t)[:, self.rank]
        return [gather(self.tokens, offsets[m], self.block_size) for m in range(self.accum)]


def val_offsets(n_tokens: int, block_size: int, count: int) -> np.ndarray:
    """``count`` evenly spaced window starts covering the split: the same at every evaluation."""
    last = n_tokens - block_size - 1
    return np.linspace(0, last, num=count).round().astype(np.int64)


class ValBatches:
    """The fixed validation windows of one rank: ``eval_batches`` batches, split across ranks."""

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, eval_batches: int, world_size=1, rank=0):
        check_length(tokens, block_size, "val")
        count = eval_batches * batch_size * world_size
        offsets = val_offsets(len(tokens), block_size, count).reshape(eval_batches, world_size, batch_size)
        self.batches = [gather(tokens, offsets[i, rank], block_size) for i in range(eval_batches)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
