"""Batches: training windows are a function of (seed, update, global batch) alone; validation windows are fixed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from data import DataError, TrainBatches, ValBatches

TOKENS = np.arange(10_000, dtype=np.uint16)  # token i = i: a window's first token is its offset


def windows(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    return torch.cat([x for x, _ in batches])


def test_train_windows_are_a_function_of_seed_and_update_alone():
    a = TrainBatches(TOKENS, 16, 4, grad_accum_steps=2, seed=3)
    b = TrainBatches(TOKENS, 16, 4, grad_accum_steps=2, seed=3)  # a "restart": new objects, no state
    for t in (0, 1, 7, 1000):
        for (xa, ya), (xb, yb) in zip(a.micro_batches(t), b.micro_batches(t), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
            assert xa.shape == (4, 16) and xa.dtype == torch.int64
            assert torch.equal(xa[:, 1:], ya[:, :-1])  # targets are the inputs shifted by one
    assert not torch.equal(windows(a.micro_batches(0)), windows(a.micro_batches(1)))
    assert not torch.equal(
        windows(a.micro_batches(0)), windows(TrainBatches(TOKENS, 16, 4, 2, seed=4).micro_batches(0))
    )
    for x, y in a.micro_batches(5):  # every window is a contiguous run of the token array
        assert torch.equal(x, x[:, :1] + torch.arange(16)) and torch.equal(y, x + 1)


@pytest.mark.parametrize("world,accum,batch", [(2, 1, 4), (4, 1, 2), (2, 2, 2), (1, 4, 2)])
def test_ranks_and_micro_steps_together_see_the_one_process_global_batch(world, accum, batch):
    one = TrainBatches(TOKENS, 16, world * accum * batch, seed=11)
    for t in (0, 3):
        per_rank = [TrainBatches(TOKENS, 16, batch, accum, world, r, seed=11).micro_batches(t) for r in range(world)]
        # micro-step m of rank r holds rows [(m·world + r)·batch, …+batch) of the one-process batch
        assembled = torch.cat([per_rank[r][m][0] for m in range(accum) for r in range(world)])
        assert torch.equal(assembled, one.micro_batches(t)[0][0])


def test_val_windows_are_fixed_and_split_across_ranks():
    val = ValBatches(TOKENS, 32, 4, eval_batches=3)
    first, second = list(val), list(val)
    again = list(ValBatches(TOKENS, 32, 4, eval_batches=3))
    assert len(first) == len(val) == 3
    for a, b, c in zip(first, second, again, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    assert first[0][0][0, 0] == TOKENS[0] and first[-1][1][-1, -1] == TOKENS[-1]  # spans the whole split


@pytest.mark.parametrize("world", [2, 3, 5])
def test_the_val_windows_are_the_same_whatever_the_number_of_ranks(world):
    """eval_batches × batch_size windows in all, dealt round-robin; a rank one short pads its last batch with a
    window whose targets are ignored, so every rank runs as many batches."""
    alone = torch.cat([x for x, _ in ValBatches(TOKENS, 32, 4, eval_batches=3)])
    ranks = [list(ValBatches(TOKENS, 32, 4, eval_batches=3, world_size=world, rank=r)) for r in range(world)]
    assert len({len(batches) for batches in ranks}) == 1
    scored = [[(x[y[:, 0] != -100], y[y[:, 0] != -100]) for x, y in batches] for batches in ranks]
    per_rank = [torch.cat([x for x, _ in batches]) for batches in scored]
    dealt = torch.stack([per_rank[i % world][i // world] for i in range(len(alone))])
    assert torch.equal(dealt, alone) and sum(len(p) for p in per_rank) == len(alone)
    for batches in ranks:  # a pad's targets are all ignored; every other target, and every input, is a token
        for x, y in batches:
            assert ((y == -100).all(dim=1) | (y >= 0).all(dim=1)).all() and (x >= 0).all()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 300), block=st.integers(1, 64), t=st.integers(0, 10**6), seed=st.integers(0, 2**31))
def test_every_window_lies_inside_the_split(n, block, t, seed):
    tokens = np.arange(n, dtype=np.uint32)
    if n < block + 1:
        with pytest.raises(DataError, match="fewer than one window"):
            TrainBatches(tokens, block, 8, seed=seed)
        return
    offsets = TrainBatches(tokens, block, 8, seed=seed).offsets(t)
    assert offsets.min() >= 0 and offsets.max() <= n - block - 1
    x, y = TrainBatches(tokens, block, 8, seed=seed).micro_batches(t)[0]
    assert torch.equal(y - x, torch.ones_like(x))


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_split_shorter_than_one_window_is_refused_in_one_line(split):
    tokens = np.arange(64, dtype=np.uint16)
    make = {"train": lambda: TrainBatches(tokens, 64, 4), "val": lambda: ValBatches(tokens, 64, 4, 2)}[split]
    with pytest.raises(
        DataError,
        match=rf"^data: the {split} split has 64 tokens, fewer than one window of "
        r"model\.block_size \+ 1 = 65; use more text",
    ):
        make()
    TrainBatches(np.arange(65, dtype=np.uint16), 64, 4)  # one window is enough


def test_a_mixture_source_too_short_for_one_window_is_named_with_its_own_keys():
    long, short = np.arange(200, dtype=np.uint16), np.arange(20, dtype=np.uint16)
    with pytest.raises(DataError, match=r"^data: the web train split has 20 tokens, .*data\.sources\.web\.max_bytes"):
        TrainBatches({"docs": long, "web": short}, 64, 4, weights={"docs": 1, "web": 1})


def test_a_token_id_outside_the_vocabulary_stops_the_batch_with_one_line_naming_file_and_position(tmp_path):
    path = tmp_path / "train.bin"
    TOKENS.tofile(path)
    tokens = np.memmap(path, dtype=np.uint16, mode="r+")
    tokens[5000] = 65535  # damage that keeps the file's size
    train = TrainBatches(tokens, 16, 64, seed=0, vocab_size=10_000)
    hit = next(t for t in range(1000) if any(o <= 5000 <= o + 16 for o in train.offsets(t).ravel()))
    for t in range(hit):
        train.micro_batches(t)  # batches that miss the damage are made as before
    with pytest.raises(
        DataError,
        match=rf"^data: token id 65535 at position 5,000 of {path} is outside the vocabulary "
        r"of 10000 ids: the token cache is damaged; delete its directory",
    ):
        train.micro_batches(hit)
    val = ValBatches(tokens, 16, 4, eval_batches=200, vocab_size=10_000)  # windows 12.5 tokens apart: one covers 5000
    with pytest.raises(DataError, match="^data: token id 65535 at position 5,000 of "):
        list(val)
