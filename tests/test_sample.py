"""sample.py: a tiny run's checkpoint → text, reproducibly, writing nothing; bad input → one line naming it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from data.tokenizer import load_tokenizer
from model import GPT, GPTConfig, generate, sample_text
from sample import check_sample_config, find_checkpoint, load_model, sample
from tests.conftest import CONF, ROOT, TINY, compose_config
from training.config import ConfigError

SAMPLE = str(ROOT / "sample.py")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_cache) -> Path:
    """A finished 10-update run."""
    from train import train

    run = tmp_path_factory.mktemp("sample") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT_DATA_CACHE", str(data_cache))
        train(compose_config(TINY + ["trainer.max_steps=10", "trainer.eval_every=0"]), run)
    return run


def sample_config(overrides: list[str]):
    """conf/sample.yaml with ``overrides``, as ``python sample.py <overrides>`` composes it."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="sample", overrides=overrides)


def test_sample_py_prints_what_sample_text_gives_and_writes_nothing(tiny_run, tmp_path):
    """From the command line as from the Python API: the same checkpoint, settings and seed give the same
    samples, each the prompt followed by its continuation; the working directory stays empty."""
    args = [
        f"checkpoint={tiny_run}",
        "prompt='import os'",
        "max_new_tokens=16",
        "num_samples=2",
        "temperature=1.0",
        "top_k=20",
        "top_p=0.9",
        "seed=7",
    ]
    proc = subprocess.run([sys.executable, SAMPLE, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "step-00000010" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/, .hydra/ or log file

    folder = find_checkpoint(str(tiny_run))
    model, _ = load_model(folder, torch.device("cpu"))
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    torch.manual_seed(7)
    generator = torch.Generator().manual_seed(7)
    texts = sample_text(
        model,
        tokenizer,
        "import os",
        16,
        separator=0,
        temperature=1.0,
        top_k=20,
        top_p=0.9,
        num_samples=2,
        generator=generator,
    )
    assert all(t.startswith("import os") and len(t) > len("import os") for t in texts)
    assert proc.stdout == "\n".join([texts[0], "-" * 40, texts[1]]) + "\n"


def test_greedy_samples_are_the_most_likely_continuation(tiny_run):
    folder = find_checkpoint(str(tiny_run / "checkpoints"))
    model, state = load_model(folder, torch.device("cpu"))
    assert state["step"] == 10 and not model.training
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    first, second = sample_text(model, tokenizer, "def ", 12, separator=0, temperature=0.0, num_samples=2)
    assert first == second
    prompt = torch.tensor([tokenizer.encode("def ").ids])
    with torch.no_grad():
        logits, _ = model(prompt)
    ids = generate(model, prompt, 12, temperature=0.0, vocab_size=tokenizer.get_vocab_size())[0].tolist()
    assert ids[prompt.size(1)] == int(logits[0, -1, : tokenizer.get_vocab_size()].argmax())
    assert first == tokenizer.decode(ids, skip_special_tokens=False)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # one process saves the shards here
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("sharded", [False, True])
def test_load_model_rebuilds_the_saved_model_from_its_checkpoint(tmp_path, arch, sharded):
    """A full checkpoint (single process, DDP) and an FSDP run's sharded one give back the same logits."""
    import torch.distributed.checkpoint as dcp

    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=64,
        block_size=16,
        n_layer=2,
        n_head=4,
        n_embd=32,
        arch=arch,
        n_kv_head=2 if arch == "llama" else None,
    )
    trained = GPT(config).eval()
    folder = tmp_path / "step-00000007"
    folder.mkdir()
    state = {"model": trained.state_dict(), "step": 7, "model_config": config.to_dict()}
    if sharded:
        dcp.save({"model": trained.state_dict()}, checkpoint_id=str(folder / "dcp"))
        state.update(model={}, sharded="dcp")
    torch.save(state, folder / "state.pt")
    loaded, _ = load_model(folder, torch.device("cpu"))
    assert loaded.config == config and not loaded.training
    if config.tie_embeddings:
        assert loaded.lm_head.weight is loaded.wte.weight
    idx = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx, idx)[0], trained(idx, idx)[0], rtol=0, atol=0)


def test_a_truncated_checkpoint_is_a_one_line_error_naming_its_file(tiny_run, tmp_path):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_run / "checkpoints" / "step-00000010", corrupt)
    state = corrupt / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # a truncated write
    message = f"^checkpoint {state}: damaged since it was saved \\(it holds 1.0 kB \\(1,000 bytes\\), "
    with pytest.raises(ConfigError, match=message) as info:
        sample(sample_config([f"checkpoint={corrupt}"]))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "entry, value, says",
    [
        ("model", "weights", ": its weights do not fit its model_config"),
        ("config", "data: [unclosed", ": its config cannot be read"),
        ("config", "data: {special_tokens: 5}", ": its config cannot be read"),
        ("model_config", {"arch": "nope"}, "/state.pt: its model_config: model.arch must be one of "),
        ("model_config", {"vocab_size": "384"}, "/state.pt: its model_config: model.vocab_size must be an integer"),
        ("model_config", {"n_head": "2"}, "/state.pt: its model_config: model.n_head must be an integer"),
        (  # a newer version's setting: sampled without it, the model would be another
            "model_config",
            {"sliding_window": 64},
            "/state.pt: its model_config: model.sliding_window must be absent",
        ),
        ("tokenizer_hash", "0" * 64, ": its tokenizer.json is not the tokenizer the run was trained with$"),
        (  # its first special token separates documents: sample.py ends a sample there
            "config",
            "data: {special_tokens: ['<|nope|>']}",
            ": its tokenizer.json has no '<|nope|>', the run's document separator \\(data.special_tokens\\)$",
        ),
    ],
)
def test_an_unchecked_checkpoint_of_another_shape_is_a_one_line_error(tiny_run, tmp_path, entry, value, says):
    """A checkpoint without checksums.json (from before they were recorded) loads unchecked: its entries are."""
    from training import checkpoint

    other = tmp_path / "other"
    shutil.copytree(tiny_run / "checkpoints" / "step-00000010", other)
    state = checkpoint.load(other)
    value = {**state[entry], **value} if isinstance(value, dict) else value
    torch.save({**state, entry: value}, other / checkpoint.STATE_FILE)
    (other / checkpoint.CHECKSUMS).unlink()
    with pytest.raises(ConfigError, match=f"^checkpoint {other}{says}") as info:
        sample(sample_config([f"checkpoint={other}"]))
    assert "\n" not in str(info.value)


def test_a_checkpoint_whose_weights_are_not_finite_is_a_one_line_error(tiny_run, tmp_path):
    """A run that diverged (saved without checksums, as before they were recorded): every sample would be the
    argmax of NaN."""
    from training import checkpoint

    other = tmp_path / "diverged"
    shutil.copytree(tiny_run / "checkpoints" / "step-00000010", other)
    state = checkpoint.load(other)
    name = next(k for k in state["model"] if "attn" in k)  # not the embedding, which the tied head would refill
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    torch.save(state, other / checkpoint.STATE_FILE)
    (other / checkpoint.CHECKSUMS).unlink()
    with pytest.raises(ConfigError, match=f"^checkpoint {other}: its weights hold values that are not finite \\("):
        sample(sample_config([f"checkpoint={other}"]))


def test_a_missing_or_empty_run_directory_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for path, reason in [(tmp_path / "no-such-run", "does not exist"), (tmp_path / "empty", "holds no checkpoint")]:
        with pytest.raises(ConfigError, match=f"^checkpoint: .*{reason}") as info:
            find_checkpoint(str(path))
        assert "\n" not in str(info.value)


def test_settings_that_fail_when_resolved_or_applied_name_sample_py_s_own_keys(tiny_run):
    with pytest.raises(ConfigError, match=r"^prompt: .*oops.*\(a literal \$\{ is written \\\$\{\)$"):
        sample(sample_config([f"checkpoint={tiny_run}", "prompt='echo ${oops}'"]))
    with pytest.raises(ConfigError, match=r"^precision must be fp32 or bf16 on the CPU"):
        sample(sample_config([f"checkpoint={tiny_run}", "device=cpu", "precision=fp16"]))
    with pytest.raises(ConfigError, match=r"^precision must be one of auto, fp32, bf16, fp16, got 'fp8'$"):
        sample(sample_config([f"checkpoint={tiny_run}", "device=cpu", "precision=fp8"]))
    with pytest.raises(ConfigError, match=r"^not enough memory for 1000000000000 samples at once \(.*num_samples"):
        sample(sample_config([f"checkpoint={tiny_run}", "num_samples=1000000000000"]))


def test_a_prompt_is_encoded_as_training_encodes_text_without_the_tokenizer_s_added_tokens(tiny_run, monkeypatch):
    """A tokenizer whose post-processor puts a start token before every text (Llama's): training never saw it."""
    from tokenizers.processors import TemplateProcessing

    module = sys.modules[sample_text.__module__]  # model.generate, whose name the package gives its function
    folder = find_checkpoint(str(tiny_run))
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    plain = tokenizer.encode("def ", add_special_tokens=False).ids
    eot = tokenizer.token_to_id("<|endoftext|>")
    tokenizer.post_processor = TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", eot)])
    fed, real = [], module.generate

    def recorded(m, idx, *args, **kwargs):
        fed.append(idx[0].tolist())
        return real(m, idx, *args, **kwargs)

    monkeypatch.setattr(module, "generate", recorded)
    gpt, _ = load_model(folder, torch.device("cpu"))
    sample_text(gpt, tokenizer, "def ", 2, separator=eot, temperature=0.0)
    assert fed == [plain]
    fed.clear()  # a special token's text in the prompt is text, as in a training document
    sample_text(gpt, tokenizer, "x = '<|endoftext|>'", 2, separator=eot, temperature=0.0)
    as_training = load_tokenizer(folder / "tokenizer.json")
    as_training.encode_special_tokens = True  # what data/cache.py encodes documents with
    assert fed == [as_training.encode("x = '<|endoftext|>'", add_special_tokens=False).ids] and eot not in fed[0]


def test_bad_sample_settings_name_the_key():
    good = {
        "checkpoint": "run",
        "max_new_tokens": 5,
        "num_samples": 1,
        "temperature": 0.8,
        "top_k": None,
        "top_p": None,
        "seed": 0,
        "prompt": "",
    }
    check_sample_config(good)
    for key, value in [
        ("checkpoint", "???"),
        ("max_new_tokens", 0),
        ("num_samples", 1.5),
        ("temperature", -1),
        ("top_k", 0),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("seed", "x"),
        ("seed", 2**70),  # past what torch's generators take: a traceback from torch
        ("prompt", None),  # prompt=null became the text "None"
        ("prompt", 123),
        ("temprature", 0.5),
    ]:
        with pytest.raises(ConfigError, match=f"^{key}"):
            check_sample_config({**good, key: value})
