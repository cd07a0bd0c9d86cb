"""export.py: a tiny trained run of either arch, exported, is the same model in transformers — loaded from the
folder alone, it computes our logits, tokenizes as we do and generates what sample.py generates; bad input is one
line naming it, with nothing written."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from data.tokenizer import EOT
from export import check_export_config, export
from sample import find_checkpoint, load_checkpoint_tokenizer, load_model, sample
from tests.conftest import TINY, compose_config
from training.config import USER_ERRORS, ConfigError, compose

# The data.vocab_size of the runs: 300 tokens, which the model pads to 320 rows, so the export drops 20.
VOCAB = 300
ARCHS = {
    "gpt2": [],
    "llama": ["model.arch=llama", "model.n_kv_head=1", "model.tie_embeddings=false", "model.rope_theta=500.0"],
}
PROMPT = "def main("


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_cache) -> dict[str, tuple[Path, Path]]:
    """arch → (run directory of a finished 3-update run, the folder export.py wrote from it)."""
    from train import train

    root = tmp_path_factory.mktemp("export")
    folders = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT_DATA_CACHE", str(data_cache))
        for arch, args in ARCHS.items():
            run = root / f"run-{arch}"
            train(
                compose_config(
                    TINY
                    + [
                        f"data.vocab_size={VOCAB}",
                        "trainer.max_steps=3",
                        "trainer.eval_every=0",
                        "trainer.sample_tokens=0",
                        *args,
                    ]
                ),
                run,
            )
            out = export(compose([f"checkpoint={run}", f"out={root / arch}"], config_name="export"))
            folders[arch] = (run, out)
    return folders


def ours(run: Path):
    folder = find_checkpoint(str(run))
    model, state = load_model(folder, torch.device("cpu"))
    return model, load_checkpoint_tokenizer(folder, model, state)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_folder_alone_loads_as_the_transformers_class_with_our_logits_and_token_ids(exported, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, out = exported[arch]
    model, tokenizer = ours(run)
    assert model.config.vocab_size == 320
    theirs = AutoModelForCausalLM.from_pretrained(out).eval()
    their_tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(theirs).__name__ == {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[arch]
    assert theirs.config.vocab_size == len(their_tokenizer) == VOCAB  # the padded rows are dropped
    assert their_tokenizer.eos_token == their_tokenizer.bos_token == EOT
    if arch == "llama":  # the rotary base also where transformers 4 reads it (5 writes it in rope_parameters only)
        assert json.loads((out / "config.json").read_text())["rope_theta"] == model.config.rope_theta == 500.0

    text = f"{PROMPT}argv):\n    return argv[1:]{EOT}import os"
    ids = tokenizer.encode(text).ids
    assert their_tokenizer(text).input_ids == ids
    assert their_tokenizer.decode(ids) == text
    x = torch.tensor([ids[: model.config.block_size]])
    with torch.no_grad():
        logits, _ = model(x, x)
        torch.testing.assert_close(theirs(x).logits, logits[..., :VOCAB], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_generation_in_transformers_is_what_sample_py_prints_at_temperature_0(exported, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, out = exported[arch]
    theirs, their_tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    inputs = their_tokenizer(PROMPT, return_tensors="pt")
    assert inputs.input_ids.size(1) + 20 <= theirs.config.max_position_embeddings  # no sliding window in play
    # sample.py writes all 20 tokens, an end-of-text among them: transformers must not stop at one
    generated = theirs.generate(**inputs, max_new_tokens=20, do_sample=False, eos_token_id=None)
    assert generated.size(1) == inputs.input_ids.size(1) + 20
    [text] = sample(
        compose([f"checkpoint={run}", f"prompt={PROMPT!r}", "max_new_tokens=20", "temperature=0"], config_name="sample")
    )
    assert their_tokenizer.decode(generated[0]) == text


def test_the_text_generation_pipeline_runs_on_the_folder(exported):
    from transformers import pipeline

    [result] = pipeline("text-generation", model=str(exported["llama"][1]))(PROMPT, max_new_tokens=8, do_sample=False)
    assert result["generated_text"].startswith(PROMPT) and len(result["generated_text"]) > len(PROMPT)


def test_an_out_folder_that_holds_files_is_refused_and_kept_unless_overwrite(exported, tmp_path):
    run, _ = exported["gpt2"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=f"^out: '{out}' already holds files; .*overwrite=true"):
        export(compose([f"checkpoint={run}", f"out={out}"], config_name="export"))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    # overwrite replaces an earlier export, never a folder holding anything else (a home folder named by mistake)
    (out / "projects").mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=f"^out: '{out}' holds more than a model folder \\(notes.txt, projects\\); "):
        export(compose([f"checkpoint={run}", f"out={out}", "overwrite=true"], config_name="export"))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt", "projects"]
    (out / "notes.txt").unlink()
    (out / "projects").rmdir()
    export(compose([f"checkpoint={run}", f"out={out}", "overwrite=true", "dtype=bfloat16"], config_name="export"))
    assert (out / "model.safetensors").is_file() and json.loads((out / "config.json").read_text())["vocab_size"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left beside it


def test_a_full_disk_or_an_out_folder_that_cannot_be_replaced_is_one_line_and_leaves_nothing(
    exported, tmp_path, monkeypatch
):
    import errno

    import export as export_module
    from data.atomic import DiskFull

    run, _ = exported["gpt2"]
    out = tmp_path / "out"

    def full(*args):  # what safetensors raises: its Rust I/O error, as a message
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(export_module, "save", full)
    for where in (out, tmp_path / "new" / "folders" / "out"):  # the folders it made for it go too
        with pytest.raises(DiskFull, match=f"^no space left .*{where}.*another disk") as info:
            export(compose([f"checkpoint={run}", f"out={where}"], config_name="export"))
        assert "\n" not in str(info.value) and list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    out.mkdir()  # an empty mount point: it cannot be renamed aside
    rename = os.rename

    def busy(src, dst):
        if Path(src) == out:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(src))
        rename(src, dst)

    monkeypatch.setattr(os, "rename", busy)
    with pytest.raises(ConfigError, match=f"^out: '{out}' cannot be written \\(Device or resource busy\\)$"):
        export(compose([f"checkpoint={run}", f"out={out}"], config_name="export"))
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and list(out.iterdir()) == []


def test_overwrite_never_replaces_a_folder_that_holds_the_checkpoint_or_the_current_directory(
    exported, tmp_path, monkeypatch
):
    run, _ = exported["gpt2"]
    kept = sorted(p for p in run.rglob("*"))
    work = tmp_path / "work"
    (work / "here").mkdir(parents=True)
    monkeypatch.chdir(work / "here")
    for out, what in [
        (run, "the checkpoint it exports"),
        (run / "checkpoints", "the checkpoint it exports"),
        (work, "the current directory"),
        (Path("."), "the current directory"),
    ]:
        with pytest.raises(ConfigError, match=f"^out: '{out}' holds {what}; ") as info:
            export(compose([f"checkpoint={run}", f"out={out}", "overwrite=true"], config_name="export"))
        assert "\n" not in str(info.value)
    step = find_checkpoint(str(run))
    for out in (step / "hf", step.parent / "exported"):  # where the next run's pruning would delete it
        with pytest.raises(
            ConfigError, match=f"^out: '{out}' is inside the checkpoints at {step.parent} \\(training replaces"
        ):
            export(compose([f"checkpoint={step}", f"out={out}"], config_name="export"))
    assert sorted(p for p in run.rglob("*")) == kept and (work / "here").is_dir()


def test_an_out_path_through_a_file_and_an_interpolation_that_does_not_resolve_are_one_line(exported, tmp_path):
    (tmp_path / "afile").write_text("a file, not a folder")
    with pytest.raises(ConfigError, match=f"^out: '{tmp_path / 'afile'}' is a file; give a folder"):
        export(
            compose([f"checkpoint={exported['gpt2'][0]}", f"out={tmp_path / 'afile' / 'model'}"], config_name="export")
        )
    with pytest.raises(ConfigError, match=r"^checkpoint: .*Environment variable 'NOPE' not found\"$"):
        export(compose(["checkpoint=${oc.env:NOPE}", f"out={tmp_path / 'out'}"], config_name="export"))
    with pytest.raises(ConfigError, match=r"^checkpoint: .*\(a literal \$\{ is written \\\$\{\)$"):  # not an env var
        export(compose(["checkpoint=${nope}", f"out={tmp_path / 'out'}"], config_name="export"))
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


def test_without_transformers_export_says_which_extra_to_install_and_writes_nothing(exported, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(USER_ERRORS, match=r"^export\.py needs transformers, .*pip install -e '\.\[hf\]'") as info:
        export(compose([f"checkpoint={exported['gpt2'][0]}", f"out={tmp_path / 'out'}"], config_name="export"))
    assert "\n" not in str(info.value) and list(tmp_path.iterdir()) == []


def test_bad_export_settings_name_the_key():
    good = {"checkpoint": "run", "out": "exported", "dtype": "float32", "overwrite": False}
    check_export_config(good)
    for key, value in [("checkpoint", "???"), ("out", None), ("dtype", "fp16"), ("overwrite", "yes"), ("outt", "x")]:
        with pytest.raises(ConfigError, match=f"^{key}"):
            check_export_config({**good, key: value})


def test_the_rows_exported_are_those_of_the_runs_softmax():
    """A padded run's padding is dropped, masked (padded_from) or, in a checkpoint from before the mask, taken as
    padding; a run from a transformers folder keeps each row of the folder's vocabulary, all in its softmax."""
    from export import softmax_rows
    from model import GPTConfig

    padded = GPTConfig(vocab_size=448, padded_from=400)
    old = GPTConfig(vocab_size=448)
    assert softmax_rows(padded, {"config": "model:\n  init_from: null\n"}, 400) == 400
    assert softmax_rows(old, {"config": "model:\n  init_from: null\n"}, 400) == 400
    assert softmax_rows(old, {}, 400) == 400
    assert softmax_rows(GPTConfig(vocab_size=320), {"config": "model:\n  init_from: /models/llama\n"}, 300) == 320
