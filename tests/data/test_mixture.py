"""Mixtures: windows drawn from each source in proportion to its weight, one tokenizer for all, each source
validated on its own; bad mixtures refused in one line before anything is written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from data import DataError, MixtureValBatches, TrainBatches, ValBatches, atomic, prepare, token_byte_lengths
from data.atomic import DiskFull
from data.cache import DISK_FULL_HINT
from data.corpus import build_corpus
from data.mixture import in_source, prepare_mixture, source_configs, tokenizer_damage, weighted_sample
from model import GPT, GPTConfig, padded_vocab
from tests.data.corpora import DOCS, data_cfg, write_texts
from training.evaluation import evaluate, validate

PROSE = [
    f"Chapter {i}. The quick brown fox jumps over the lazy dog, again and again.\n" * (i % 4 + 2) for i in range(40)
]


def mixture_cfg(tmp_path: Path, **sources):
    """data=mixture of two local corpora (code-like and prose), with each source's settings updated by ``sources``."""
    code, prose = write_texts(tmp_path / "code", DOCS), write_texts(tmp_path / "prose", PROSE)
    cfg = data_cfg("mixture", vocab_size=320)
    cfg.sources = {
        "code": {"source": "text_files", "path": str(code[0].parent), "weight": 3},
        "prose": {"source": "text_files", "path": str(prose[0].parent), "weight": 1},
    }
    for name, values in sources.items():
        cfg.sources[name] = {**OmegaConf.to_container(cfg.sources[name]), **values}
    return cfg


def source_of(tokens: torch.Tensor) -> torch.Tensor:
    """Which source a window came from: source s holds the token values s·10⁴ + i."""
    return tokens[:, 0] // 10_000


def test_realised_proportions_over_many_updates_match_the_weights():
    arrays = {name: (s * 10_000 + np.arange(5_000)).astype(np.uint16) for s, name in enumerate("abc")}
    weights = {"a": 5, "b": 3, "c": 2}
    batches = TrainBatches(arrays, 16, 64, seed=1, weights=weights)
    counts = torch.zeros(3)
    for t in range(300):
        ((x, y),) = batches.micro_batches(t)
        counts += torch.bincount(source_of(x), minlength=3)
        assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(source_of(x), source_of(y))  # one source per window
    shares = counts / counts.sum()  # 19 200 windows: the standard error of a share is below 0.004
    torch.testing.assert_close(shares, torch.tensor([0.5, 0.3, 0.2]), rtol=0, atol=0.015)


@pytest.mark.parametrize("world,accum,batch", [(2, 1, 4), (2, 2, 2)])
def test_a_mixtures_windows_are_a_function_of_seed_and_update_split_across_ranks(world, accum, batch):
    arrays = {name: (s * 10_000 + np.arange(3_000)).astype(np.uint16) for s, name in enumerate("ab")}
    weights = {"a": 1, "b": 1}
    one = TrainBatches(arrays, 16, world * accum * batch, seed=7, weights=weights)
    again = TrainBatches(arrays, 16, world * accum * batch, seed=7, weights=weights)  # a restart: no state
    for t in (0, 5):
        assert torch.equal(one.micro_batches(t)[0][0], again.micro_batches(t)[0][0])
        per_rank = [
            TrainBatches(arrays, 16, batch, accum, world, r, seed=7, weights=weights).micro_batches(t)
            for r in range(world)
        ]
        assembled = torch.cat([per_rank[r][m][0] for m in range(accum) for r in range(world)])
        assert torch.equal(assembled, one.micro_batches(t)[0][0])
    assert not torch.equal(one.micro_batches(0)[0][0], one.micro_batches(1)[0][0])


def test_the_tokenizer_learns_from_each_source_in_proportion_to_its_weight(tmp_path):
    cfg = mixture_cfg(tmp_path)
    corpora = {name: build_corpus(settings) for name, (_, settings) in source_configs(cfg).items()}
    taken = {name: 0 for name in corpora}
    train_texts = {name: set(c.documents("train")) for name, c in corpora.items()}
    for text in weighted_sample(corpora, {"code": 0.75, "prose": 0.25}, max_bytes=6_000):
        taken[next(n for n, texts in train_texts.items() if text in texts)] += len(text.encode())
    assert 6_000 <= sum(taken.values()) < 6_000 + max(len(d.encode()) for d in DOCS + PROSE)
    assert taken["code"] / sum(taken.values()) == pytest.approx(0.75, abs=0.06)


def test_a_long_document_does_not_take_its_sources_share_past_its_weight(tmp_path):
    """Documents are taken in pieces: one long file (a source's 60 %) would else overshoot its source's share,
    and the sample end, when the other source runs out, before the shares even out."""
    long = "\n".join(f"line {i}: " + "x" * 40 for i in range(2_000)) + "\n"  # ~100 kB
    write_texts(tmp_path / "long", [long, *DOCS])
    cfg = mixture_cfg(tmp_path, code={"path": str(tmp_path / "long")})
    corpora = {name: build_corpus(settings) for name, (_, settings) in source_configs(cfg).items()}
    prose = "".join(corpora["prose"].documents("train"))
    taken = {"code": 0, "prose": 0}
    for text in weighted_sample(corpora, {"code": 0.5, "prose": 0.5}, max_bytes=None):
        taken["prose" if text in prose else "code"] += len(text.encode())
    assert taken["prose"] == len(prose.encode())  # the smaller source read whole: the sample ends with it
    assert taken["code"] / sum(taken.values()) == pytest.approx(0.5, abs=0.03), taken


def test_the_tokenizers_sample_does_not_depend_on_the_order_the_sources_are_declared_in(tmp_path):
    """The tokenizer's cache key sorts the sources: the sample it is trained on must not follow their order."""
    cfg = mixture_cfg(tmp_path)
    corpora = {name: build_corpus(settings) for name, (_, settings) in source_configs(cfg).items()}
    weights = {"code": 0.5, "prose": 0.5}  # the first pick a tie
    reversed_corpora = dict(reversed(corpora.items()))
    sample = list(weighted_sample(corpora, weights, max_bytes=3_000))
    assert sample == list(weighted_sample(reversed_corpora, weights, max_bytes=3_000))


def test_sources_that_read_the_same_file_are_named_in_a_warning(tmp_path, caplog):
    cfg = mixture_cfg(tmp_path)
    with caplog.at_level("WARNING", logger="data"):
        prepare_mixture(cfg)
        assert "both read" not in caplog.text
        best = {"source": "text_files", "path": str(tmp_path / "code" / "doc00*.txt"), "weight": 1}
        with open_dict(cfg):
            cfg.sources.best = best
        prepare_mixture(cfg)
    said = f"data.sources.code and data.sources.best both read {tmp_path / 'code' / 'doc000.txt'}: each splits it"
    assert said in caplog.text


def test_per_source_bpb_equals_evaluating_that_source_alone(tmp_path):
    mixture = prepare_mixture(mixture_cfg(tmp_path))
    tokenizer = mixture.tokenizer()
    assert {c.meta["tokenizer_hash"] for c in mixture.caches.values()} == {mixture.meta["tokenizer_hash"]}
    assert mixture.weights == {"code": 0.75, "prose": 0.25}
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=padded_vocab(mixture.vocab_size), block_size=16, n_layer=1, n_head=2, n_embd=16))
    token_bytes = torch.from_numpy(token_byte_lengths(tokenizer, model.config.vocab_size))
    on = {"device": torch.device("cpu"), "autocast": torch.autocast("cpu", enabled=False)}
    vals = {name: ValBatches(tokens, 16, 4, 2, name=name) for name, tokens in mixture.tokens("val").items()}
    metrics = validate(model, MixtureValBatches(vals, mixture.weights), token_bytes, **on)
    for name in ("code", "prose"):  # the source alone, through the single-source pipeline, with that tokenizer
        alone = prepare(data_cfg("text_files", path=str(tmp_path / name), tokenizer=str(mixture.tokenizer_path)))
        loss, bpb = evaluate(model, ValBatches(alone.tokens("val"), 16, 4, 2), token_bytes, **on)
        assert (metrics[f"val/{name}/loss"], metrics[f"val/{name}/bpb"]) == (loss, bpb)
    low, high = sorted([metrics["val/code/bpb"], metrics["val/prose/bpb"]])
    assert low < metrics["val/bpb"] < high  # the mixture's own lies between its sources'


@pytest.mark.parametrize(
    "sources, match",
    [
        ({"prose": {"weight": 0}}, r"^data\.sources\.prose\.weight must be a finite number > 0, got 0$"),
        ({"prose": {"weight": -1.5}}, r"^data\.sources\.prose\.weight must be a finite number > 0, got -1\.5$"),
        ({"prose": {"weight": float("inf")}}, r"^data\.sources\.prose\.weight must be a finite number > 0, got inf$"),
        (
            {"prose": {"weight": 1e-300}, "code": {"weight": 1e300}},
            r"^data\.sources\.prose\.weight: 1e-300 is 0 of the weights' sum in floating point; give weights within ",
        ),
        (
            {"prose": {"source": "web"}},
            r"^data\.sources\.prose\.source must be one of builtin, text_files, hub \(or a fork.s, named by "
            r"data\.sources\.prose\._target_\), got ",
        ),
        (
            {"prose": {"source": "builtin", "_target_": "tests.data.corpora.Listed"}},
            r"^data\.sources\.prose: source=builtin is the template's and _target_ a fork's; give one of them$",
        ),
        ({"prose": {"vocab_size": 512}}, r"^data\.sources\.prose\.vocab_size: the sources of a mixture share it; "),
        ({"prose": {"nmae": "x"}}, r"^data\.sources\.prose\.nmae is not a key of a text_files source; it has "),
        ({"prose": {"path": "/no/such/dir"}}, r"^data\.sources\.prose\.path: '/no/such/dir' does not exist"),
        ({"prose": {"path": None}}, r"^data\.sources\.prose\.path must be a file, a directory or a glob"),
        ({}, r"^data\.sources must map each source's name to its settings"),
    ],
)
def test_a_bad_mixture_is_refused_in_one_line_with_nothing_written(tmp_path, sources, match):
    cfg = mixture_cfg(tmp_path, **sources)
    if not sources:
        cfg.sources = {}
    with pytest.raises(DataError, match=match) as info:
        prepare(cfg)
    assert "\n" not in str(info.value)
    assert not Path(os.environ["GPT_DATA_CACHE"]).exists()


def test_weights_too_large_to_sum_keep_their_proportions(tmp_path):
    mixture = prepare_mixture(mixture_cfg(tmp_path, code={"weight": 1.5e308}, prose={"weight": 0.5e308}))
    assert mixture.weights == {"code": 0.75, "prose": 0.25}


def test_a_cache_dir_that_cannot_be_written_is_one_line_naming_it(tmp_path):
    cfg = mixture_cfg(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    cfg.cache_dir = str(tmp_path / "afile" / "cache")
    with pytest.raises(DataError, match=r"^data\.cache_dir: \S+/afile/cache cannot be written \(Not a directory\)"):
        prepare(cfg)


@pytest.mark.parametrize("damage", ["edited", "truncated"])
def test_a_damaged_shared_tokenizer_is_trained_again_with_a_warning(damage, tmp_path, caplog):
    first = prepare_mixture(mixture_cfg(tmp_path))
    text = first.tokenizer_path.read_text()
    first.tokenizer_path.write_text(
        text.replace('"merges":[', '"merges":[["x","y"],', 1) if damage == "edited" else text[:500]
    )
    assert first.tokenizer_path.read_text() != text
    with pytest.raises(DataError, match=r"^data: the mixture's tokenizer \S+ is missing or damaged \(tokenizer\.json"):
        prepare_mixture(mixture_cfg(tmp_path), build_if_missing=False)
    again = prepare_mixture(mixture_cfg(tmp_path))
    assert again.tokenizer_path.read_text() == text
    (again.tokenizer_path.parent / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "meta.json is unreadable (RecursionError" in tokenizer_damage(again.tokenizer_path.parent)
    assert "damaged (tokenizer.json is not the one trained into it); training it again" in caplog.text
    assert {name: c.meta for name, c in again.caches.items()} == {name: c.meta for name, c in first.caches.items()}


def test_a_source_with_no_validation_text_is_refused_before_anything_is_written(tmp_path):
    one_line = tmp_path / "one"
    write_texts(one_line, ["a single line of text that cannot be split\n"])
    cfg = mixture_cfg(tmp_path, prose={"path": str(one_line)})
    with pytest.raises(
        DataError,
        match=r"^data\.sources\.prose: the corpus .* gives no validation text; add documents or lines .* raise "
        r"data\.sources\.prose\.val_fraction",
    ):
        prepare(cfg)
    assert not Path(os.environ["GPT_DATA_CACHE"]).exists()


def test_a_sources_error_names_its_own_keys_under_its_name_and_leaves_paths_and_shared_keys_alone():
    error = DataError("data.path: 'corp/data.json' does not exist")
    assert str(in_source("web", error)) == "data.sources.web.path: 'corp/data.json' does not exist"
    error = DataError("data: data.tokenizer has no <|endoftext|>; put one first in data.special_tokens")
    expected = "data.sources.web: data.tokenizer has no <|endoftext|>; put one first in data.special_tokens"
    assert str(in_source("web", error)) == expected


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, a device every write to fails ENOSPC")
def test_a_full_disk_while_writing_the_shared_tokenizer_names_it_in_the_cache_and_leaves_nothing(
    tmp_path, local_caches, monkeypatch
):
    """The tokenizer's file leads to /dev/full, where every write fails as on a full disk."""
    real_begin = atomic.begin

    def begin(parent, name):
        tmp = real_begin(parent, name)
        if name.startswith("tokenizer-"):
            (tmp / "tokenizer.json").symlink_to("/dev/full")
        return tmp

    monkeypatch.setattr(atomic, "begin", begin)
    with pytest.raises(DiskFull) as err:
        prepare(mixture_cfg(tmp_path))
    message = str(err.value)
    assert re.match(rf"^no space left to write {re.escape(str(local_caches))}/tokenizer-\w+: it needs \d", message)
    assert message.endswith("; " + DISK_FULL_HINT) and "\n" not in message
    assert not local_caches.exists()  # nor the cache directory this call made


def test_a_source_with_no_training_text_is_refused_before_anything_is_written(tmp_path):
    """One two-line document, hashed into val: split by lines, the last 99 % of them (both) go to val."""
    two_lines = tmp_path / "two"
    write_texts(two_lines, ["the first line of two\nand the second\n"])
    cfg = mixture_cfg(tmp_path, prose={"path": str(two_lines), "val_fraction": 0.99})
    with pytest.raises(
        DataError,
        match=r"^data\.sources\.prose: the corpus .* gives no training text; lower "
        r"data\.sources\.prose\.val_fraction \(now 0\.99\) or add documents$",
    ):
        prepare(cfg)
    assert not Path(os.environ["GPT_DATA_CACHE"]).exists()
