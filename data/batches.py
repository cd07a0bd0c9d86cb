"""Batches: (batch, block_size) input/target windows drawn from a split's flat token array.

The rule for training. Let G = grad_accum_steps × world_size × batch_size be the global batch (sequences per
optimizer update). The windows of update t are G start offsets drawn uniformly from [0, n − block_size − 1]
by a PCG64 generator seeded with SeedSequence([seed, t]); window i is tokens[o_i : o_i + block_size + 1],
x its first block_size tokens and y its last. Micro-step m of rank r takes the windows
i ∈ [(m·world_size + r)·batch_size, (m·world_size + r + 1)·batch_size).

So the set of windows of update t depends only on (seed, t, G), never on how G is split into ranks and
micro-steps: a resumed run sees exactly the batches it would have seen (no sampler state to save), N ranks
together see the windows that one process with batch_size × N sees, and changing (world_size,
grad_accum_steps) at the same G keeps every update's windows — and so its mean gradient — the same.

A mixture of sources (named token arrays with weights w_s, summing to 1) draws from the same generator, first
each window's source (window i comes from source s with probability w_s), then its start, uniform within that
source; the split into ranks and micro-steps is the same.

Validation: ``eval_batches × batch_size`` windows whose starts are evenly spaced over the val split (the first
at 0, the last ending at its final token), the same at every evaluation and for any number of ranks: window i
goes to rank i mod world_size, each rank batches its share by up to batch_size, and a rank one window short pads
its last batch with targets scored nowhere. A mixture has that many per source.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import chain

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from data.errors import DataError

IGNORE_INDEX = -100  # a target the loss skips (torch's cross_entropy default)


def check_length(tokens: np.ndarray, block_size: int, split: str, source: str = "") -> None:
    """A split must hold one window: block_size + 1 tokens (inputs plus the shifted targets). ``source``: a
    mixture's source, whose own keys the advice names."""
    if len(tokens) < block_size + 1:
        raise too_short(len(tokens), block_size + 1, split, source)


def too_short(count: int, window: int, split: str, source: str = "") -> DataError:
    keys = f"data.sources.{source}." if source else "data."
    return DataError(
        f"data: the {f'{source} ' if source else ''}{split} split has {count} tokens, fewer than one window "
        f"of model.block_size + 1 = {window}; use more text ({keys}max_bytes, {keys}val_fraction) or a "
        "smaller model.block_size"
    )


def check_layout(batch_size: int, world_size: int, rank: int, *counts: int) -> None:
    if min(batch_size, world_size, *counts) < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"need batch_size, world_size, counts ≥ 1 and 0 ≤ rank < world_size, got "
            f"{batch_size}, {world_size}, {counts}, rank {rank}"
        )


def window_offsets(seed: int, t: int, count: int, n_tokens: int, block_size: int) -> np.ndarray:
    """``count`` window starts in [0, n_tokens − block_size − 1], a function of (seed, t, count) alone."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, t])))
    return rng.integers(0, n_tokens - block_size, size=count, dtype=np.int64)


def mixture_windows(
    seed: int, t: int, count: int, n_tokens: np.ndarray, weights: np.ndarray, block_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` windows of a mixture: each one's source index (drawn with probabilities ``weights``) and its start
    in [0, n_tokens[source] − block_size − 1]; a function of (seed, t, count) alone."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, t])))
    sources = rng.choice(len(weights), size=count, p=weights)
    return sources, rng.integers(0, n_tokens[sources] - block_size, dtype=np.int64)


def check_ids(windows: np.ndarray, vocab_size: int | None, tokens: np.ndarray, offsets: np.ndarray) -> None:
    """Every token id of the gathered ``windows`` (rows starting at ``offsets`` of ``tokens``) is below
    ``vocab_size``: damaged token files stop here with one line, not as an out-of-range embedding lookup (a
    device-side assert on CUDA) or as training on garbage ids that happen to fit."""
    if vocab_size is None or not windows.size or windows.max() < vocab_size:
        return
    row, col = np.argwhere(windows >= vocab_size)[0]
    where = getattr(tokens, "filename", None) or "the token array"
    raise DataError(
        f"data: token id {windows[row, col]} at position {offsets[row] + col:,} of {where} is outside the vocabulary "
        f"of {vocab_size} ids: the token cache is damaged; delete its directory and re-run to rebuild it"
    )


def gather(
    tokens: np.ndarray, offsets: np.ndarray, block_size: int, vocab_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x and targets y (len(offsets), block_size), int64; y is x shifted by one token. With
    ``vocab_size``, every id is checked to be below it."""
    # Indexing rows of a strided view copies each window as one contiguous run, not token by token.
    windows = sliding_window_view(tokens, block_size + 1)[offsets].astype(np.int64)
    check_ids(windows, vocab_size, tokens, offsets)
    w = torch.from_numpy(windows)
    return w[:, :-1], w[:, 1:]


def gather_mixed(
    sources: list[np.ndarray], indices: np.ndarray, offsets: np.ndarray, block_size: int, vocab_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gather` for windows of several token arrays: window i is sources[indices[i]] from offsets[i]."""
    windows = np.empty((len(offsets), block_size + 1), dtype=np.int64)
    for s in np.unique(indices):
        rows = indices == s
        windows[rows] = sliding_window_view(sources[s], block_size + 1)[offsets[rows]]
        check_ids(windows[rows], vocab_size, sources[s], offsets[rows])
    w = torch.from_numpy(windows)
    return w[:, :-1], w[:, 1:]


class TrainBatches:
    """The micro-batches of each optimizer update for one rank (the rule is in the module docstring).

    ``tokens`` is one token array, or a mixture: named arrays with positive ``weights`` (normalised here).
    With ``vocab_size``, every id of every batch is checked to be below it.
    """

    def __init__(
        self,
        tokens: np.ndarray | Mapping[str, np.ndarray],
        block_size: int,
        batch_size: int,
        grad_accum_steps: int = 1,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        weights: Mapping[str, float] | None = None,
        vocab_size: int | None = None,
    ):
        named = dict(tokens) if isinstance(tokens, Mapping) else {"": tokens}
        for name, array in named.items():
            check_length(array, block_size, "train", name)
        check_layout(batch_size, world_size, rank, grad_accum_steps, block_size)
        if isinstance(tokens, Mapping):
            w = np.array([float((weights or {}).get(name, 0.0)) for name in named])
            if not (w > 0).all():
                raise ValueError(f"every source needs a weight > 0, got {weights} for {list(named)}")
            self.weights = w / w.sum()
        else:
            self.weights = None
        self.names, self.sources = list(named), list(named.values())
        self.tokens, self.block_size, self.batch_size = self.sources[0], block_size, batch_size
        self.accum, self.world, self.rank, self.seed = grad_accum_steps, world_size, rank, seed
        self.vocab_size = vocab_size

    @property
    def global_batch(self) -> int:
        """G: sequences per optimizer update over all ranks and micro-steps."""
        return self.accum * self.world * self.batch_size

    @property
    def tokens_per_update(self) -> int:
        """Tokens of one optimizer update over all ranks."""
        return self.global_batch * self.block_size

    def windows(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Every window of update t as (source index, start), each shaped (grad_accum, world, batch): [m, r] is
        micro-step m of rank r. One source: every index is 0."""
        shape = (self.accum, self.world, self.batch_size)
        if self.weights is None:
            starts = window_offsets(self.seed, t, self.global_batch, len(self.tokens), self.block_size)
            return np.zeros(shape, dtype=np.int64), starts.reshape(shape)
        sizes = np.array([len(s) for s in self.sources], dtype=np.int64)
        indices, starts = mixture_windows(self.seed, t, self.global_batch, sizes, self.weights, self.block_size)
        return indices.reshape(shape), starts.reshape(shape)

    def offsets(self, t: int) -> np.ndarray:
        """All window starts of update t, shaped (grad_accum, world, batch): [m, r] is micro-step m of rank r."""
        return self.windows(t)[1]

    def micro_batches(self, t: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's (x, y) for each micro-step of update t."""
        indices, offsets = (w[:, self.rank] for w in self.windows(t))
        if self.weights is None:
            return [gather(self.tokens, offsets[m], self.block_size, self.vocab_size) for m in range(self.accum)]
        return [
            gather_mixed(self.sources, indices[m], offsets[m], self.block_size, self.vocab_size)
            for m in range(self.accum)
        ]


def val_offsets(n_tokens: int, block_size: int, count: int) -> np.ndarray:
    """``count`` evenly spaced window starts over [0, n_tokens − block_size − 1]: the same at every evaluation."""
    last = n_tokens - block_size - 1
    return np.linspace(0, last, num=count).round().astype(np.int64)


class ValBatches:
    """One rank's share of the fixed validation windows: ``eval_batches × batch_size`` windows in all, whatever the
    number of ranks, dealt round-robin (window i to rank i mod world_size) and gathered on use in batches of up to
    ``batch_size`` (each id checked to be below ``vocab_size`` when given). Every rank takes as many batches: a rank
    one window short pads its last batch with a window whose targets are the ignore index (-100), counted nowhere."""

    def __init__(
        self,
        tokens: np.ndarray,
        block_size: int,
        batch_size: int,
        eval_batches: int,
        world_size: int = 1,
        rank: int = 0,
        name: str = "",
        vocab_size: int | None = None,
    ):
        check_length(tokens, block_size, "val", name)
        check_layout(batch_size, world_size, rank, eval_batches, block_size)
        offsets = val_offsets(len(tokens), block_size, eval_batches * batch_size)
        mine = offsets[rank::world_size]
        share = -(-len(offsets) // world_size)  # every rank's count, the last ones padded up to it
        self.padding = share - len(mine)
        self.offsets = np.array_split(np.concatenate([mine, offsets[: self.padding]]), -(-share // batch_size))
        self.tokens, self.block_size, self.vocab_size = tokens, block_size, vocab_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i, batch_offsets in enumerate(self.offsets):
            x, y = gather(self.tokens, batch_offsets, self.block_size, self.vocab_size)
            if i == len(self.offsets) - 1 and self.padding:
                y = y.clone()  # x and y are views of one array
                y[len(y) - self.padding :] = IGNORE_INDEX  # the pad: scored nowhere
            yield x, y

    def __len__(self) -> int:
        return len(self.offsets)


class MixtureValBatches:
    """A mixture's validation: each source's own :class:`ValBatches` (``sources``) and its weight (``weights``,
    summing to 1); iterated as one sequence of batches, source after source."""

    def __init__(self, sources: Mapping[str, ValBatches], weights: Mapping[str, float]):
        total = sum(weights[name] for name in sources)
        self.sources, self.weights = dict(sources), {name: weights[name] / total for name in sources}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return chain.from_iterable(self.sources.values())

    def __len__(self) -> int:
        return sum(len(batches) for batches in self.sources.values())
