"""Bad input stops a run before any work or file, with one line naming the key, what is allowed and what was given."""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.conftest import TINY, compose_config, run_train
from training.distributed import resolve_precision
from training.errors import ConfigError
from training.validate import check_config

# (overrides, the key the message must name, a fragment of what is allowed)
BAD_CONFIGS = [
    (["model.n_layer=0"], "model.n_layer", "> 0"),
    (["model.n_head=-1"], "model.n_head", "> 0"),
    (["model.n_embd=0"], "model.n_embd", "> 0"),
    (["model.block_size=0"], "model.block_size", "> 0"),
    (["model.n_embd=130", "model.n_head=4"], "model.n_embd", "divisible by model.n_head"),
    (["model.dropout=1.0"], "model.dropout", "[0, 1)"),
    (["model.arch=transformer"], "model.arch", "gpt2, llama"),
    (["trainer.max_steps=0"], "trainer.max_steps", "> 0"),
    (["trainer.batch_size=0"], "trainer.batch_size", "> 0"),
    (["trainer.grad_accum_steps=0"], "trainer.grad_accum_steps", "> 0"),
    (["trainer.eval_batches=0"], "trainer.eval_batches", "> 0"),
    (["trainer.ckpt_every=-5"], "trainer.ckpt_every", "≥ 0"),
    (["trainer.ckpt_every=10", "trainer.keep_checkpoints=1"], "trainer.keep_checkpoints", "≥ 2"),
    (["trainer.grad_clip=-1"], "trainer.grad_clip", "≥ 0"),
    (["trainer.device=tpu"], "trainer.device", "auto, cpu, cuda, mps"),
    (["trainer.precision=fp8"], "trainer.precision", "auto, fp32, bf16, fp16"),
    (["trainer.compile=maybe"], "trainer.compile", "auto, true, false"),
    (["trainer.nonfinite=ignore"], "trainer.nonfinite", "stop, skip"),
    (["trainer.stop_at=0"], "trainer.stop_at", "[1, trainer.max_steps"),
    (["optim.lr=0"], "optim.lr", "> 0"),
    (["optim.lr=-1e-3"], "optim.lr", "> 0"),
    (["optim.betas=[0.9,1.0]"], "optim.betas", "[0, 1)"),
    (["optim.betas=[-0.1,0.9]"], "optim.betas", "[0, 1)"),
    (["optim.eps=0"], "optim.eps", "> 0"),
    (["optim.weight_decay=-0.1"], "optim.weight_decay", "≥ 0"),
    (["data.vocab_size=100"], "data.vocab_size", "≥ 257"),
    (["data.val_fraction=0"], "data.val_fraction", "(0, 1)"),
    (["data.on_decode_error=ignore"], "data.on_decode_error", "skip, replace, error"),
    (["logger.mode=sometimes"], "logger.mode", "auto, online, offline, disabled"),
    (["schedule.warmup_steps=-1"], "schedule.warmup_steps", "≥ 0"),
    (["trainer.max_steps=100", "schedule.warmup_steps=101"], "schedule.warmup_steps", "≤"),
    (["schedule.min_lr=-1e-5"], "schedule.min_lr", "≥ 0"),
    (["optim.lr=1e-3", "schedule.min_lr=1e-2"], "schedule.min_lr", "≤ the peak"),
    (["schedule.min_lr_ratio=-0.5"], "schedule.min_lr_ratio", "≥ 0"),
    (["schedule.name=triangle"], "schedule.name", "cosine"),
]


@pytest.mark.parametrize("overrides,key,allowed", BAD_CONFIGS, ids=[" ".join(c[0]) for c in BAD_CONFIGS])
def test_a_bad_value_is_one_line_naming_the_key_what_is_allowed_and_what_was_given(overrides, key, allowed):
    cfg = compose_config(overrides)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(key), message
    assert allowed in message, message
    assert ", got " in message, message


def test_fp16_on_the_cpu_is_refused():
    with pytest.raises(ConfigError, match=r"trainer.precision must be fp32 or bf16 on the CPU .* got 'fp16'"):
        resolve_precision("fp16", torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_on_a_machine_without_cuda_is_refused(tmp_path, data_cache):
    proc = run_train(TINY + ["trainer.device=cuda"], tmp_path / "run", data_cache, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: trainer.device must be auto or cpu on this machine (torch sees no CUDA GPU), got 'cuda'"
    )
    assert not (tmp_path / "run").exists()


def test_bf16_on_a_gpu_without_bf16_is_refused(monkeypatch):
    """The message for an older GPU (V100, T4); the GPU itself is absent here, so torch.cuda answers as one would."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100-SXM2-16GB")
    with pytest.raises(ConfigError, match=r"trainer.precision must be fp16 or fp32 on Tesla V100.*got 'bf16'"):
        resolve_precision("bf16", torch.device("cuda", 0))


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (["model=huge"], "Could not find 'model/huge'"),
        (["trainer.max_stepz=10"], "Could not override 'trainer.max_stepz'"),
    ],
)
def test_hydra_reports_unknown_options_and_mistyped_keys(overrides, fragment, tmp_path, data_cache):
    proc = run_train(TINY + overrides, tmp_path / "run", data_cache, check=False)
    assert proc.returncode != 0
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_cache):
    run = tmp_path_factory.mktemp("finished") / "run"
    run_train(TINY + ["trainer.max_steps=4", "trainer.eval_every=0"], run, data_cache)
    return run


def _copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def _fails_with_one_line(args, run, cache, *fragments):
    proc = run_train(TINY + ["trainer.max_steps=6"] + args, run, cache, check=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line


def test_a_resume_path_that_does_not_exist(tmp_path, data_cache):
    _fails_with_one_line(
        ["trainer.resume=/no/such/run"], tmp_path / "run", data_cache, "trainer.resume", "does not exist"
    )


def test_a_truncated_checkpoint(finished_run, tmp_path, data_cache):
    run = _copy(finished_run, tmp_path)
    state = run / "checkpoints" / "step-00000004" / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    before = state.read_bytes()
    _fails_with_one_line([], run, data_cache, "state.pt", "truncated or corrupt")
    assert state.read_bytes() == before  # nothing clobbered


def test_a_corrupt_checkpoint(finished_run, tmp_path, data_cache):
    run = _copy(finished_run, tmp_path)
    (run / "checkpoints" / "step-00000004" / "state.pt").write_bytes(b"not a checkpoint at all" * 100)
    _fails_with_one_line([], run, data_cache, "truncated or corrupt")


def test_a_checkpoint_of_another_model_shape(finished_run, tmp_path, data_cache):
    run = _copy(finished_run, tmp_path)
    _fails_with_one_line(["model.n_embd=64"], run, data_cache, "another shape", "n_embd 32 → 64")


def test_a_checkpoint_of_another_vocab(finished_run, tmp_path, data_cache):
    run = _copy(finished_run, tmp_path)
    _fails_with_one_line(["data.vocab_size=448"], run, data_cache, "vocab_size 384 → 448")


def test_resume_false_refuses_a_run_directory_with_checkpoints(finished_run, tmp_path, data_cache):
    run = _copy(finished_run, tmp_path)
    _fails_with_one_line(["trainer.resume=false"], run, data_cache, "trainer.resume=false", "already holds checkpoints")
