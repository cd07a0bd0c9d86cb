"""Muon's Newton–Schulz dtype (``optim.muon.ns_dtype``): bf16 gives torch.optim.Muon's update exactly, float32
follows a float64 reference, auto picks by what the device multiplies natively (mocked for the kind of CPU this
machine is not), an emulated choice is named at the start (bf16 autocast's: test_config_checks.py), and a
checkpoint records the dtype that ran."""

from __future__ import annotations

import copy

import pytest
import torch

from model import GPT, GPTConfig
from tests.conftest import compose_config, read_metrics
from training import checkpoint, distributed, optim
from training.optim import NS_COEFFICIENTS, Muon, build_optimizer, orthogonalize, resolve_ns_dtype
from training.signals import Stopped

CPU = torch.device("cpu")
SETTINGS = {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.95, "ns_steps": 5}


def matrices(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in ((48, 16), (16, 16), (16, 64))]


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon arrived in torch 2.9")
@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("adjust_lr_fn", [None, "match_rms_adamw"])
def test_in_bf16_the_update_is_torch_muons_bit_for_bit(nesterov, adjust_lr_fn):
    ours, theirs = matrices(), matrices()
    mine = Muon(ours, **SETTINGS, nesterov=nesterov, adjust_lr_fn=adjust_lr_fn, ns_dtype="bfloat16")
    torchs = torch.optim.Muon(theirs, **SETTINGS, nesterov=nesterov, adjust_lr_fn=adjust_lr_fn)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        for a, b in zip(ours, theirs, strict=True):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        mine.step()
        torchs.step()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
        assert torch.equal(mine.state[a]["momentum_buffer"], torchs.state[b]["momentum_buffer"])


@pytest.mark.parametrize("shape", [(48, 16), (16, 64), (32, 32)])
def test_in_float32_the_orthogonalisation_follows_a_float64_reference(shape):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    reference = orthogonalize(g.double(), NS_COEFFICIENTS, 5, 1e-7, torch.float64)
    got = orthogonalize(g, NS_COEFFICIENTS, 5, 1e-7, torch.float32)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference, rtol=1e-5, atol=1e-6)
    in_bf16 = orthogonalize(g, NS_COEFFICIENTS, 5, 1e-7, torch.bfloat16).double()
    assert (in_bf16 - reference).abs().max() > 10 * (got.double() - reference).abs().max()  # what float32 buys
    singular = torch.linalg.svdvals(reference)
    assert singular.min() > 0.5 and singular.max() < 1.5  # about orthogonal, as the iteration promises


def test_the_orthogonalisation_leaves_its_input_as_it_was():
    """Without Nesterov the update is the momentum buffer itself, which an in-place scaling would corrupt."""
    g = torch.randn(16, 32)
    kept = g.clone()
    orthogonalize(g, NS_COEFFICIENTS, 5, 1e-7, torch.float32)
    assert torch.equal(g, kept)


@pytest.mark.parametrize("fast,expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_picks_bf16_only_where_the_cpu_multiplies_it_natively(monkeypatch, fast, expected):
    monkeypatch.setattr(optim, "cpu_has_fast_bf16", lambda: fast)
    dtype, why = resolve_ns_dtype("auto", CPU)
    assert dtype == expected
    assert why == ("auto: this CPU multiplies bf16 natively" if fast else "auto: bf16 is emulated on this CPU")
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32))
    muon = build_optimizer(model, compose_config(["optim=muon"]).optim, CPU).optimizers[1]
    assert muon.ns_dtype == expected and muon.param_groups[0]["ns_dtype"] == expected


def test_auto_on_a_gpu_follows_its_bf16_support(monkeypatch):
    for supported, expected in ((True, "bfloat16"), (False, "float32")):
        # torch's answer by default counts emulation: a V100 says yes unless asked for native bf16
        monkeypatch.setattr(
            torch.cuda, "is_bf16_supported", lambda including_emulation=True, s=supported: s or including_emulation
        )
        assert resolve_ns_dtype("auto", torch.device("cuda", 0))[0] == expected


def test_bf16_chosen_where_it_is_emulated_is_named_once_with_its_cost(monkeypatch, caplog):
    monkeypatch.setattr(optim, "cpu_has_fast_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="train"):
        assert resolve_ns_dtype("bfloat16", CPU) == ("bfloat16", "as set; emulated on this CPU: slow")
        assert resolve_ns_dtype("float32", CPU) == ("float32", "as set")
    assert [r.message for r in caplog.records] == [
        "optim.muon.ns_dtype=bfloat16: emulated on this CPU (no bf16 instructions): slow, about ten times float32's "
        "cost; auto picks float32 here"
    ]


@pytest.mark.parametrize(
    "isa,fast", [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True), ("AVX10_1_512_AMX", True)]
)
def test_a_cpu_capped_by_onednn_below_bf16_counts_as_without_it(monkeypatch, isa, fast):
    """ONEDNN_MAX_CPU_ISA caps the instructions torch's CPU matmuls use: below AVX512_CORE_BF16, bf16 is emulated."""
    monkeypatch.setattr(distributed, "cpu_flags", lambda: "fpu avx2 avx512f avx512_bf16 amx_bf16")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert distributed.cpu_has_fast_bf16() is fast
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert distributed.cpu_has_fast_bf16()
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", isa)  # its older name, which oneDNN still reads
    assert distributed.cpu_has_fast_bf16() is fast
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")  # the newer name wins where both are set
    assert distributed.cpu_has_fast_bf16()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.delenv("DNNL_MAX_CPU_ISA")
    monkeypatch.setattr(distributed, "cpu_flags", lambda: "fpu avx2 fma")
    assert not distributed.cpu_has_fast_bf16()
    monkeypatch.setattr(distributed, "cpu_flags", lambda: "")  # no /proc/cpuinfo (macOS, Windows): fp32, never slow
    assert not distributed.cpu_has_fast_bf16()


def test_the_start_of_run_names_muons_dtype_and_why(tmp_path, tiny_train, caplog, monkeypatch):
    monkeypatch.setattr(optim, "cpu_has_fast_bf16", lambda: False)
    with caplog.at_level("INFO", logger="train"):
        tiny_train(tmp_path / "run", ["optim=muon", "trainer.max_steps=2", "trainer.eval_every=0"])
    assert "optimizer  Muon (Newton–Schulz in float32; auto: bf16 is emulated on this CPU) + AdamW" in caplog.text


def test_a_checkpoint_records_the_dtype_that_ran_and_the_resume_is_exact(tmp_path, tiny_train, caplog):
    args = ["optim=muon", "optim.muon.ns_dtype=float32", "trainer.max_steps=8", "trainer.eval_every=4"]
    whole = read_metrics(tiny_train(tmp_path / "whole", args))
    run = tmp_path / "run"
    with pytest.raises(Stopped):
        tiny_train(run, [*args, "trainer.stop_at=3"])
    state = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    assert [g.get("ns_dtype") for g in state["optimizer"]["param_groups"]] == [None, None, "float32"]  # AdamW's, Muon's
    resumed = read_metrics(tiny_train(run, args))
    keys = ("step", "train/loss", "train/grad_norm", "val/loss")
    assert [[r.get(k) for k in keys] for r in resumed] == [[r.get(k) for k in keys] for r in whole]
    caplog.clear()
    other = ["optim=muon", "optim.muon.ns_dtype=bfloat16", *args[2:], "trainer.stop_at=4"]
    with pytest.raises(Stopped), caplog.at_level("WARNING", logger="train"):  # a resume in another dtype says so
        tiny_train(tmp_path / "branch", [*other, f"trainer.resume={run}/checkpoints/step-00000003"])
    assert "Muon orthogonalised in float32 before this resume and in bfloat16 from here" in caplog.text


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon arrived in torch 2.9")
def test_the_state_of_torch_muon_in_an_older_checkpoint_loads_and_continues_alike(caplog):
    ours, theirs = matrices(), matrices()
    torchs = torch.optim.Muon(theirs, **SETTINGS)
    g = torch.Generator().manual_seed(3)
    grads = [[torch.randn(p.shape, generator=g) for p in theirs] for _ in range(3)]
    for p, grad in zip(theirs, grads[0], strict=True):
        p.grad = grad.clone()
    torchs.step()
    with torch.no_grad():
        for a, b in zip(ours, theirs, strict=True):
            a.copy_(b)
    mine = Muon(ours, **SETTINGS, nesterov=True, ns_dtype="bfloat16")
    with caplog.at_level("WARNING", logger="train"):
        mine.load_state_dict(copy.deepcopy(torchs.state_dict()))  # as read from a file: no tensor shared
    assert not caplog.records  # torch's Muon ran bf16, as this one does
    for step in grads[1:]:
        for a, b, grad in zip(ours, theirs, step, strict=True):
            a.grad, b.grad = grad.clone(), grad.clone()
        mine.step()
        torchs.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
