"""Evaluation: validation loss in nats per token, and bits per byte over the text the targets encode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data import DataError, prepare, token_byte_lengths
from training.evaluation import evaluate

DOCS = [
    f"Document {i}: naïve café, 東京 ✓ — line {i}.\n" + f"def f(x):\n    return x * {i}\n" * (i % 5 + 1)
    for i in range(40)
]


class UniformModel(torch.nn.Module):
    """Logits 0 over a vocab of V: every target costs ln V nats."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, idx, targets, reduction="mean"):
        logits = torch.zeros(*idx.shape, self.vocab)
        return logits, F.cross_entropy(logits.view(-1, self.vocab), targets.reshape(-1), reduction=reduction)


def test_bits_per_byte_of_a_uniform_model_is_ln_v_over_bytes_per_token(tmp_path):
    (tmp_path / "c").mkdir()
    for i, doc in enumerate(DOCS):
        (tmp_path / "c" / f"doc{i:03d}.txt").write_text(doc, encoding="utf-8")
    cfg = {
        "source": "text_files",
        "path": str(tmp_path / "c"),
        "cache_dir": str(tmp_path / "cache"),
        "vocab_size": 320,
        "val_fraction": 0.3,
    }
    cache = prepare(cfg)
    val = torch.from_numpy(np.asarray(cache.tokens("val"), dtype=np.int64))
    n_tokens, n_docs, n_bytes = len(val), cache.meta["documents"]["val"], cache.meta["bytes"]["val"]
    vocab = 64 * math.ceil(cache.vocab_size / 64)  # the padded vocab, as the model is built
    token_bytes = torch.from_numpy(token_byte_lengths(cache.tokenizer(), vocab))
    # One batch whose targets are the whole val split: n_docs end-of-text targets (0 bytes) and the text.
    batches = [(torch.zeros_like(val)[None], val[None])]
    loss, bpb = evaluate(
        UniformModel(vocab), batches, token_bytes, device=torch.device("cpu"), autocast=torch.no_grad()
    )
    assert loss == pytest.approx(math.log(vocab), rel=1e-6)  # float32 cross-entropy
    # by hand: the text targets cost (n_tokens − n_docs)·ln V nats and encode the val text's UTF-8 bytes
    assert bpb == pytest.approx((n_tokens - n_docs) * math.log(vocab) / (math.log(2) * n_bytes), rel=1e-6)


@pytest.mark.parametrize("world", [2, 3])
def test_the_ranks_sums_are_one_processs_whatever_the_number_of_ranks(world):
    """Each rank scores its share of the same windows (a pad scored nowhere): their sums are one process's."""
    from data import ValBatches
    from model import GPT, GPTConfig
    from training.evaluation import loss_and_bpb, validation_sums

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16))
    tokens = np.random.default_rng(0).integers(0, 64, 5_000).astype(np.uint16)
    token_bytes = torch.randint(0, 4, (64,))
    on = {"device": torch.device("cpu"), "autocast": torch.no_grad()}
    alone = validation_sums(model, ValBatches(tokens, 16, 4, eval_batches=5), token_bytes, **on)
    ranks = [ValBatches(tokens, 16, 4, eval_batches=5, world_size=world, rank=r) for r in range(world)]
    summed = sum(validation_sums(model, batches, token_bytes, **on) for batches in ranks)
    assert summed[1] == alone[1] and summed[3] == alone[3]  # the same targets and bytes, exactly
    assert loss_and_bpb(summed) == pytest.approx(loss_and_bpb(alone), rel=1e-12)


def test_validation_windows_that_overlap_in_a_short_split_are_warned_of(tmp_path, tiny_train, caplog):
    """The tests' tiny corpus holds out 65 tokens, fewer than 2 × 4 windows of 32: each is scored several times."""
    overlap = "the validation split: the 8 windows of 32 tokens (trainer.eval_batches × trainer.batch_size) overlap"
    with caplog.at_level("WARNING", logger="train"):
        tiny_train(tmp_path / "short", ["trainer.max_steps=1"])
        assert overlap in caplog.text
        caplog.clear()
        tiny_train(tmp_path / "held_out", ["trainer.max_steps=1", "data.val_fraction=0.5"])
    assert "overlap" not in caplog.text


def test_a_reused_split_too_short_for_one_window_is_refused_without_the_overlap_warning(tmp_path, tiny_train, caplog):
    tiny_train(tmp_path / "first", ["trainer.max_steps=1"])  # the cache, made for windows of 33 tokens
    caplog.clear()
    with caplog.at_level("WARNING", logger="train"), pytest.raises(DataError, match="fewer than one window of model"):
        tiny_train(tmp_path / "longer", ["trainer.max_steps=1", "model.block_size=128"])  # 65 held out
    assert "overlap" not in caplog.text  # the refusal is the whole story


def test_an_evaluation_that_leaves_the_model_in_eval_mode_does_not_turn_dropout_off_for_training():
    from training.evaluation import Evaluations

    seen = []

    def leaves_eval(model):
        model.eval()  # and never model.train(): dropout would stay off for the rest of the run
        return {"eval/a": 1.0}

    def records(model):
        seen.append(model.training)
        return {"eval/b": 2.0}

    model = torch.nn.Dropout(0.5)
    assert Evaluations({"a": leaves_eval, "b": records})(model) == {"eval/a": 1.0, "eval/b": 2.0}
    assert seen == [True] and model.training  # each evaluation gets the model as the run had it, and gives it back


def test_a_metric_name_another_evaluation_logged_first_is_logged_apart_and_said_once(caplog):
    from training.evaluation import Evaluations

    both = Evaluations({"perplexity": lambda m: {"val/loss": 3.0}, "mine": lambda m: {"val/loss": 0.001, "x": 1.0}})
    with caplog.at_level("WARNING", logger="train"):
        for _ in range(2):
            assert both(torch.nn.Linear(1, 1)) == {"val/loss": 3.0, "eval/mine/val/loss": 0.001, "x": 1.0}
    assert [r.getMessage() for r in caplog.records] == [
        "eval.evals.mine: its metric val/loss is eval.evals.perplexity's too; logged as eval/mine/val/loss (name it "
        "apart)"
    ]
