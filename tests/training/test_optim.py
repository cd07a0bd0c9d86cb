"""Optimizers: AdamW, or Muon beside AdamW, under one schedule — the partition, λ on every group, the checkpoint
round trip, and one-line errors."""

from __future__ import annotations

import math

import pytest
import torch

from model import GPT, GPTConfig
from scheduling import Schedule, build_scheduler
from tests.conftest import compose_config, read_metrics, train_records
from training import checkpoint
from training.config import ConfigError, check_config
from training.optim import Optimizers, build_optimizer
from training.signals import Stopped

MUON = ["optim=muon", "optim.lr=2e-3", "optim.muon.lr=0.02"]


@pytest.mark.parametrize("arch,tied", [("gpt2", True), ("llama", False)])
def test_muon_takes_every_2d_weight_of_the_blocks_and_adamw_everything_else_once(arch, tied):
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, arch=arch, tie_embeddings=tied))
    optimizer = build_optimizer(model, compose_config(["optim=muon"]).optim, torch.device("cpu"))
    assert isinstance(optimizer, Optimizers)
    adamw, muon = optimizer.optimizers
    names = {id(p): n for n, p in model.named_parameters()}
    in_muon = [names[id(p)] for g in muon.param_groups for p in g["params"]]
    in_adamw = [names[id(p)] for g in adamw.param_groups for p in g["params"]]
    assert sorted(in_muon + in_adamw) == sorted(names.values())  # every parameter in exactly one group
    assert sorted(in_muon) == sorted(n for n, p in model.named_parameters() if n.startswith("blocks.") and p.dim() == 2)
    assert all(not n.startswith("blocks.") or p.dim() < 2 for n, p in model.named_parameters() if n in in_adamw)
    decayed = [names[id(p)] for p in adamw.param_groups[0]["params"]]
    assert "wte.weight" in decayed and all(names[id(p)] not in decayed for p in adamw.param_groups[1]["params"])


def test_one_schedule_multiplies_every_group_s_own_peak():
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32))
    optimizer = build_optimizer(model, compose_config(MUON).optim, torch.device("cpu"))
    schedule = Schedule("cosine", total_steps=10, warmup_steps=2, min_lr_ratio=0.1)
    scheduler = build_scheduler(optimizer, schedule)
    peaks = [2e-3, 2e-3, 0.02]  # AdamW's two groups, then Muon's
    x = torch.randint(0, 64, (2, 16))
    for t in range(12):
        for group, peak in zip(optimizer.param_groups, peaks, strict=True):
            assert math.isclose(group["lr"], peak * schedule(t), rel_tol=1e-12), (t, group.get("name"))
        _, loss = model(x, x.roll(-1, 1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    # the real optimizers hold the same group dicts: what LambdaLR sets is what they step with
    assert optimizer.optimizers[1].param_groups[0]["lr"] == optimizer.param_groups[2]["lr"]


def test_a_muon_run_logs_both_lrs_and_resumes_bit_for_bit(tmp_path, tiny_train):
    args = [
        *MUON,
        "trainer.max_steps=10",
        "schedule.warmup_steps=2",
        "trainer.eval_every=5",
        "trainer.grad_accum_steps=2",
        "model.dropout=0.1",
    ]
    whole = read_metrics(tiny_train(tmp_path / "whole", args))
    run = tmp_path / "run"
    with pytest.raises(Stopped):
        tiny_train(run, [*args, "trainer.stop_at=4"])
    state = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    assert state["optimizer_name"] == "muon" and len(state["optimizer"]["param_groups"]) == 3
    tiny_train(run, args)
    resumed = read_metrics(run)
    assert [without_timings(r) for r in resumed] == [without_timings(r) for r in whole]  # losses, lrs, norms
    schedule = Schedule("cosine", total_steps=10, warmup_steps=2, min_lr_ratio=0.1)
    for t, r in train_records(run).items():
        assert math.isclose(r["train/lr"], 2e-3 * schedule(t), rel_tol=1e-12)
        assert math.isclose(r["train/lr_muon"], 0.02 * schedule(t), rel_tol=1e-12)


TIMINGS = ("train/tokens_per_sec", "train/mfu", "train/step_time", "train/data_wait", "train/peak_memory_gb")


def without_timings(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMINGS}


def test_a_resume_with_another_optimizer_is_refused_unless_allowed_then_said(tmp_path, tiny_train, caplog):
    run = tiny_train(tmp_path / "run", ["trainer.max_steps=4", "trainer.eval_every=0", "trainer.sample_tokens=0"])
    with pytest.raises(ConfigError, match=r"trained with optim=adamw, the config asks for optim=muon"):
        tiny_train(run, [*MUON, "trainer.max_steps=6", "trainer.eval_every=0"])
    with caplog.at_level("INFO"):
        tiny_train(run, [*MUON, "trainer.max_steps=6", "trainer.eval_every=0", "trainer.allow_schedule_change=true"])
    said = "from update 4, optim=muon replaces optim=adamw (trainer.allow_schedule_change): its state starts afresh"
    assert said in [r.getMessage() for r in caplog.records]
    assert sorted(train_records(run)) == list(range(6)) and "train/lr_muon" in train_records(run)[5]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optim.muon.momentum=-0.5"], "optim.muon.momentum must be a number in [0, 1), got -0.5"),
        (["optim.muon.ns_steps=0"], "optim.muon.ns_steps must be an integer > 0, got 0"),
        (["optim.muon.adjust_lr_fn=sqrt"], "optim.muon.adjust_lr_fn must be one of none, original, match_rms_adamw"),
        (["optim.muon.lr=0"], "optim.muon.lr must be a number > 0, got 0"),
        (["+optim.muon.moment=0.9"], "optim.muon.moment is not a key of optim; did you mean optim.muon.momentum?"),
        (["trainer.strategy=fsdp"], "trainer.strategy must be auto, single or ddp with optim=muon"),
    ],
)
def test_bad_muon_settings_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        check_config(compose_config(["optim=muon", *overrides]))


SGD = {"name": "sgd", "lr": 0.1}  # in the order of every file of conf/optim/


@pytest.mark.parametrize(
    "node,message",
    [
        (  # the first group's lr is what train/lr logs as optim.lr × λ(t)
            {"_target_": "tests.training.fork_parts.half_lr_first", **SGD},
            "optim: tests.training.fork_parts.half_lr_first gives its first param group lr 0.05, not optim.lr=0.1",
        ),
        (
            {"_target_": "tests.training.fork_parts.returns_groups", **SGD},
            "optim: tests.training.fork_parts.returns_groups returned a list, not one torch.optim.Optimizer",
        ),
        (  # a fork's optim file with _target_ mistyped
            {"_targt_": "tests.training.fork_parts.lbfgs", **SGD},
            "optim._targt_: did you mean optim._target_, the dotted path of what to build?",
        ),
        (  # the update calls step() once, after the backward passes (a closure would compute the loss again)
            {"_target_": "tests.training.fork_parts.lbfgs", **SGD},
            "optim: tests.training.fork_parts.lbfgs returned a LBFGS, whose step() needs a closure (the loss again, "
            "computed by the optimizer); the update calls step() without one",
        ),
        (  # Hydra's usual idiom: but the builder is called with the model and the device first
            {"_target_": "torch.optim.SGD", **SGD},
            "optim: torch.optim.SGD does not take these settings (its parameter lr is filled already: it is called "
            "with the template's 2 argument(s) first",
        ),
        (
            {"_target_": "tests.training.fork_parts.without_name", **SGD, "momentun": 0.9},
            "optim: tests.training.fork_parts.without_name does not take these settings (it takes no optim.name; "
            "each key of optim is passed to it)",
        ),
        (
            {"_target_": "tests.training.fork_parts.without_name", "lr": 0.1, "momentun": 0.9},
            "optim: tests.training.fork_parts.without_name does not take these settings (it takes no optim.momentun; "
            "did you mean optim.momentum?)",
        ),
        (
            {"_target_": "tests.training.fork_parts.without_name", "lr": 0.1},
            "optim: tests.training.fork_parts.without_name does not take these settings (it needs optim.momentum, "
            "which is not set)",
        ),
    ],
)
def test_a_forks_optimizer_builder_that_does_not_fit_the_plug_point_is_one_line(node, message):
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=16))
    with pytest.raises(ConfigError) as info:
        build_optimizer(model, node, torch.device("cpu"))
    assert str(info.value).startswith(message), str(info.value)


def test_an_optimizer_that_leaves_trainable_parameters_out_is_warned_of_by_name(caplog):
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=16))
    with caplog.at_level("WARNING", logger="train"):
        build_optimizer(model, {"_target_": "tests.training.fork_parts.blocks_only", **SGD}, torch.device("cpu"))
    left = [n for n, p in model.named_parameters() if not n.startswith("blocks.")]
    assert [r.getMessage() for r in caplog.records] == [
        f"optim: tests.training.fork_parts.blocks_only leaves {len(left)} of {len(list(model.parameters()))} "
        f"trainable parameter tensors out of its param groups ({', '.join(left)}): they will not train (freeze "
        "one with requires_grad=False)"
    ]
    caplog.clear()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.blocks.parameters():
        p.requires_grad_(True)
    with caplog.at_level("WARNING", logger="train"):  # frozen as torch freezes: nothing to say
        build_optimizer(model, {"_target_": "tests.training.fork_parts.blocks_only", **SGD}, torch.device("cpu"))
    assert not caplog.records


def test_a_forks_optimizer_keys_named_as_adamws_are_its_builders_to_judge(tmp_path, tiny_train):
    fork = ["optim._target_=tests.training.fork_parts.adafactor", "optim.name=adafactor", "~optim.weight_decay"]
    fork += ["~optim.fused", "optim.eps=[null,1e-3]", "optim.betas=[0.9,0.99,0.8]"]
    run = tiny_train(tmp_path / "run", [*fork, "trainer.max_steps=2"])
    assert sorted(train_records(run)) == [0, 1]
    with pytest.raises(ConfigError, match=r"^optim.eps must be a number > 0, got \[None, 0.001\]"):
        check_config(compose_config(["optim.eps=[null,1e-3]"]))  # the template's AdamW: its own checks


def test_a_grad_scaler_steps_both_optimizers_or_neither():
    """What fp16 does on a GPU, with the CPU's GradScaler: an overflow skips Muon's step and AdamW's alike."""
    from training.engine import OK, OVERFLOW, train_update

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32))
    optimizer = build_optimizer(model, compose_config(MUON).optim, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, Schedule("constant"))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    x = torch.randint(0, 64, (2, 16))
    step = dict(device=torch.device("cpu"), autocast=torch.autocast("cpu", enabled=False), scaler=scaler)
    before = [p.detach().clone() for p in model.parameters()]
    assert train_update(model, optimizer, scheduler, [(x, x.roll(-1, 1))], **step).status == OK
    after = [p.detach().clone() for p in model.parameters()]
    muon = {id(p) for p in optimizer.optimizers[1].param_groups[0]["params"]}
    moved = {id(p) for p, a, b in zip(model.parameters(), before, after, strict=True) if not torch.equal(a, b)}
    assert muon <= moved and moved - muon  # both optimizers stepped
    scaler.update(new_scale=torch.tensor(2.0**127))  # every scaled gradient now overflows fp32
    assert train_update(model, optimizer, scheduler, [(x, x.roll(-1, 1))], **step).status == OVERFLOW
    assert all(torch.equal(p, a) for p, a in zip(model.parameters(), after, strict=True))
    assert scheduler.last_epoch == 1  # the schedule moved with the one step taken
