"""model.init_from: a run starts from a GPT-2- or Llama-style model that transformers saved in a local folder — its
shape from config.json, its tokenizer instead of the trained BPE, its weights — and the first evaluation is the
loss transformers computes; what contradicts the folder is refused in one line."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch

from data import prepare
from data.batches import ValBatches
from data.tokenizer import load_tokenizer, tokenizer_hash, train_tokenizer
from model import ModelConfigError
from tests.conftest import ROOT, TINY, compose_config, read_metrics
from training import checkpoint
from training.config import USER_ERRORS, ConfigError
from training.init_from import with_init_from


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """Tiny random models built and saved with transformers, each with its own tokenizer (no network):
    GPT-2 with 64 positions and a GPT-2-like tokenizer; Llama with grouped-query attention, an untied head, a
    vocabulary (320) larger than its tokenizer (300) and "</s>" as end-of-text."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("transformers")
    texts = [p.read_text() for p in sorted((ROOT / "training").glob("*.py"))]
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    )
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=320,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32,
            rope_theta=500.0,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
        )
    )
    tokenizers = {
        "gpt2": PreTrainedTokenizerFast(
            tokenizer_object=train_tokenizer(texts, 300, ["<|endoftext|>"]),
            eos_token="<|endoftext|>",
            bos_token="<|endoftext|>",
        ),
        "llama": PreTrainedTokenizerFast(
            tokenizer_object=train_tokenizer(texts, 300, ["<unk>", "<s>", "</s>"]),
            unk_token="<unk>",
            bos_token="<s>",
            eos_token="</s>",
        ),
    }
    folders = {}
    for arch, model in (("gpt2", gpt2), ("llama", llama)):
        folders[arch] = root / arch
        model.save_pretrained(folders[arch])
        tokenizers[arch].save_pretrained(folders[arch])
    return folders


@pytest.mark.parametrize("arch, args", [("gpt2", ["model.block_size=32"]), ("llama", [])])
def test_the_first_evaluation_of_an_imported_model_is_transformers_own_loss(saved, tiny_train, tmp_path, arch, args):
    """Whatever the preset (TINY's nano), the folder sets the shape; a smaller block_size crops GPT-2's positions.
    The token cache is built with the folder's tokenizer, which the checkpoints carry on."""
    from transformers import AutoModelForCausalLM

    args = [f"model.init_from={saved[arch]}", *args]
    run = tiny_train(tmp_path / "run", [*args, "trainer.max_steps=1", "trainer.eval_every=1"], overrides=args)
    first = next(r for r in read_metrics(run) if "val/loss" in r)
    assert first["step"] == 0

    cfg = with_init_from(compose_config(TINY + args), args)
    cache = prepare(cfg.data)
    folder_tokenizer = load_tokenizer(saved[arch] / "tokenizer.json").to_str()
    assert cache.meta["tokenizer_hash"] == tokenizer_hash(folder_tokenizer)
    theirs = AutoModelForCausalLM.from_pretrained(saved[arch]).eval()
    batches = ValBatches(cache.tokens("val"), 32, cfg.trainer.batch_size, cfg.trainer.eval_batches)
    with torch.no_grad():
        # y is x shifted by one already: transformers' loss takes it as shift_labels, unshifted
        losses = [theirs(input_ids=x, labels=y, shift_labels=y.contiguous()).loss for x, y in batches]
    assert abs(first["val/loss"] - torch.stack(losses).mean().item()) < 1e-5

    saved_state = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    shape = {k: saved_state["model_config"][k] for k in ("arch", "n_layer", "n_embd", "block_size", "vocab_size")}
    assert shape == {"arch": arch, "n_layer": 2, "n_embd": 32, "block_size": 32, "vocab_size": theirs.config.vocab_size}
    assert (checkpoint.latest(run / "checkpoints") / "tokenizer.json").read_text() == folder_tokenizer

    # sample.py's empty prompt starts a document from the run's separator ("</s>" for Llama, not its first special
    # token "<unk>")
    from hydra import compose, initialize_config_dir

    from model import generate
    from sample import load_model, sample

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        sample_cfg = compose("sample", [f"checkpoint={run}", "temperature=0", "max_new_tokens=6", "device=cpu"])
    model, _ = load_model(checkpoint.latest(run / "checkpoints"), torch.device("cpu"))
    tokenizer = load_tokenizer(saved[arch] / "tokenizer.json")
    starts = {}
    for token in ("<unk>", "</s>", "<|endoftext|>"):
        if (ident := tokenizer.token_to_id(token)) is not None:
            ids = generate(model, torch.tensor([[ident]]), 6, temperature=0.0, vocab_size=tokenizer.get_vocab_size())
            starts[token] = tokenizer.decode(ids[0, 1:].tolist(), skip_special_tokens=False)
    assert len(set(starts.values())) == len(starts)  # each start continues differently: the check tells them apart
    assert sample(sample_cfg) == [starts[cfg.data.special_tokens[0]]]

    # exported, the run's tokenizer names the folder's special tokens as its own
    from transformers import AutoTokenizer

    from export import export
    from training.config import compose

    out = export(compose([f"checkpoint={run}", f"out={tmp_path / 'exported'}"], config_name="export"))
    assert set(cfg.data.special_tokens) <= set(AutoTokenizer.from_pretrained(out).all_special_tokens)
    # with every row of the folder's vocabulary (Llama's 320 over its tokenizer's 300), each in the run's softmax
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    assert exported.config.vocab_size == theirs.config.vocab_size
    with torch.no_grad():
        losses = [exported(input_ids=x, labels=y, shift_labels=y.contiguous()).loss for x, y in batches]
    last = [r for r in read_metrics(run) if "val/loss" in r][-1]
    assert last["step"] == 1 and abs(last["val/loss"] - torch.stack(losses).mean().item()) < 1e-5


def test_the_folders_end_of_text_separates_documents_unless_data_special_tokens_is_given(saved):
    cfg = with_init_from(compose_config(TINY + [f"model.init_from={saved['llama']}"]))
    # its other special tokens follow, in id order
    assert list(cfg.data.special_tokens) == ["</s>", "<unk>", "<s>"]
    assert cfg.data.tokenizer == str(saved["llama"] / "tokenizer.json")
    args = [f"model.init_from={saved['llama']}", "data.special_tokens=['<s>']"]
    assert list(with_init_from(compose_config(TINY + args), args).data.special_tokens) == ["<s>"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.n_layer=3", "model.n_layer=3 contradicts model.init_from={folder}, whose config.json gives 2;"),
        ("model.arch=llama", "model.arch='llama' contradicts model.init_from={folder}, whose config.json gives 'gpt2'"),
        (
            "model.block_size=128",
            "model.block_size=128 contradicts model.init_from={folder}, whose config.json "
            "gives 64; drop the override (the folder sets the architecture); a smaller",
        ),
        (
            "model.qk_norm=true",
            "model.qk_norm=True contradicts model.init_from={folder}, whose config.json gives False",
        ),
        (
            "model.logit_softcap=30",
            "model.logit_softcap=30 contradicts model.init_from={folder}, whose config.json gives None",
        ),
        (
            "data.tokenizer={folder}/other.json",
            "data.tokenizer must be null with model.init_from (its tokenizer is {folder}/tokenizer.json)",
        ),
    ],
)
def test_an_override_that_contradicts_the_folder_is_refused_in_one_line(saved, override, message):
    folder = saved["gpt2"]
    args = [f"model.init_from={folder}", override.format(folder=folder)]
    with pytest.raises(USER_ERRORS) as info:
        with_init_from(compose_config(TINY + args), args)
    assert str(info.value).startswith(message.format(folder=folder)) and "\n" not in str(info.value)


def test_overrides_that_agree_with_the_folder_are_accepted(saved):
    """n_kv_head=null is n_head, bias means nothing to llama: the same model."""
    args = [f"model.init_from={saved['gpt2']}", "model.n_layer=2", "model.n_kv_head=null", "model.n_embd=32"]
    assert with_init_from(compose_config(TINY + args), args).model.n_layer == 2
    args = [f"model.init_from={saved['llama']}", "model.bias=true", "model.n_kv_head=2"]
    assert with_init_from(compose_config(TINY + args), args).model.n_kv_head == 2


def test_a_folder_without_a_model_or_tokenizer_is_refused_naming_it(saved, tmp_path):
    with pytest.raises(ModelConfigError, match=r"^model\.init_from: 'gpt2' is not a folder .*hf download gpt2"):
        with_init_from(compose_config(TINY + ["model.init_from=gpt2"]))
    gone = tmp_path / "moved" / "hf"  # a local path that is not there: no hub advice
    with pytest.raises(ModelConfigError, match=r"\(no config.json\)$"):
        with_init_from(compose_config(TINY + [f"model.init_from={gone}"]))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((saved["gpt2"] / "config.json").read_text())
    with pytest.raises(ModelConfigError, match=f"^model.init_from: {bare} has no tokenizer.json"):
        with_init_from(compose_config(TINY + [f"model.init_from={bare}"]))
    (bare / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelConfigError, match=f"^model.init_from: {bare} holds a 'bert' model"):
        with_init_from(compose_config(TINY + [f"model.init_from={bare}"]))


def test_weights_the_folder_lacks_and_a_damaged_tokenizer_config_are_refused_naming_them(saved, tmp_path):
    """transformers would start the missing tensors from random values, with a table on the console."""
    from model.hf import read_weights

    deeper = tmp_path / "deeper"
    shutil.copytree(saved["llama"], deeper)
    config = json.loads((deeper / "config.json").read_text())
    (deeper / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))  # layer 2 has no weights
    said = []  # what transformers' own logger emits (its handler writes to the console)
    heard = logging.Handler()
    heard.emit = said.append
    logging.getLogger("transformers").addHandler(heard)
    try:
        with pytest.raises(ModelConfigError, match=rf"^model.init_from: the weights in {deeper} lack model.layers.2."):
            read_weights(deeper, None)
    finally:
        logging.getLogger("transformers").removeHandler(heard)
    assert not said, "the one line alone: not transformers' table of the missing tensors"
    damaged = tmp_path / "damaged"
    shutil.copytree(saved["gpt2"], damaged)
    (damaged / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=rf"^model.init_from: {damaged}/tokenizer_config.json cannot be read \("):
        with_init_from(compose_config(TINY + [f"model.init_from={damaged}"]))


def test_without_transformers_init_from_says_which_extra_to_install(saved, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModelConfigError, match=r"^model\.init_from needs transformers, .*pip install -e '\.\[hf\]'"):
        with_init_from(compose_config(TINY + [f"model.init_from={saved['gpt2']}"]))


def test_check_config_knows_init_from_as_a_model_key():
    from training.config import check_config

    check_config(compose_config(TINY + ["model.init_from=/some/folder"]))  # the folder is read when the run starts
