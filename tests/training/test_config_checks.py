"""Bad input stops a run before any work or file, with one line naming the key, what is allowed and what was
given; every config group option composes and passes the checks."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from tests.conftest import TINY, compose_config
from training.config import USER_ERRORS, ConfigError, budget_key, check_config, group_options
from training.distributed import resolve_device, resolve_precision

GROUPS = ("model", "optim", "schedule", "data", "trainer", "logger", "experiment")

# (overrides, the key the message must name, a fragment of what is allowed)
BAD_CONFIGS = [
    (["model.n_layer=0"], "model.n_layer", "> 0"),
    (["model.n_embd=130", "model.n_head=4"], "model.n_embd", "divisible by model.n_head"),
    (["model.dropout=1.0"], "model.dropout", "[0, 1)"),
    (["model.arch=transformer"], "model.arch", "gpt2, llama"),
    (["model.activation=[gelu]"], "model.activation", "one of gelu"),
    (["trainer.max_steps=0"], "trainer.max_steps", "> 0"),
    # past float's range: arithmetic with floats overflowed (a traceback) where not refused
    ([f"trainer.max_steps={2**53 + 1}"], "trainer.max_steps", "≤ 2**53"),
    (["trainer.max_steps=null", f"trainer.max_tokens={10**30}"], "trainer.max_tokens", "< 2**63"),
    (["trainer.max_steps=null", "trainer.max_time=1e308"], "trainer.max_time", "at most 10**9"),
    ([f"schedule.min_lr={10**400}"], "schedule.min_lr", "a floor ≥ 0"),
    ([f"optim.lr={10**400}"], "optim.lr", "> 0"),
    (["trainer.batch_size=0"], "trainer.batch_size", "> 0"),
    (["trainer.ckpt_every=-5"], "trainer.ckpt_every", "≥ 0"),
    (["trainer.ckpt_every=10", "trainer.keep_checkpoints=1"], "trainer.keep_checkpoints", "≥ 2"),
    (["trainer.grad_clip=-1"], "trainer.grad_clip", "≥ 0"),
    (["trainer.device=tpu"], "trainer.device", "auto, cpu, cuda, mps"),
    (["trainer.precision=fp4"], "trainer.precision", "auto, fp32, bf16, fp16, fp8"),
    (["trainer.compile=maybe"], "trainer.compile", "auto, true, false"),
    (["trainer.nonfinite=ignore"], "trainer.nonfinite", "stop, skip"),
    (["trainer.hang_timeout=0"], "trainer.hang_timeout", "null or a number of seconds in (0, 2592000]"),
    (["trainer.hang_timeout=1e10"], "trainer.hang_timeout", "null or a number of seconds in (0, 2592000]"),
    (["trainer.sample_prompt=123"], "trainer.sample_prompt", "a string (quote a number"),
    (["trainer.collective_timeout=null"], "trainer.collective_timeout", "a number of seconds in (0, 2592000]"),
    (["trainer.collective_timeout=1e14"], "trainer.collective_timeout", "a number of seconds in (0, 2592000]"),
    (["trainer.on_spike=skip"], "trainer.on_spike", "null or rollback"),
    (["trainer.spike_factor=1"], "trainer.spike_factor", "a number > 1"),
    (["trainer.spike_window=0"], "trainer.spike_window", "> 0"),
    (["trainer.spike_window=1180591620717411303424"], "trainer.spike_window", "[1, 1,000,000]"),  # OverflowError
    (["trainer.on_spike=rollback"], "trainer.ckpt_every", "an integer > 0 with trainer.on_spike=rollback"),
    (["trainer.allow_schedule_change=maybe"], "trainer.allow_schedule_change", "true, false or branch"),
    (["trainer.stop_at=0"], "trainer.stop_at", "[1, trainer.max_steps"),
    (["trainer.global_batch_tokens=100"], "trainer.global_batch_tokens", "a multiple of batch_size × block_size"),
    (["optim.lr=0"], "optim.lr", "> 0"),
    (["optim.betas=[0.9,1.0]"], "optim.betas", "[0, 1)"),
    (["optim=muon", "trainer.strategy=fsdp"], "trainer.strategy", "auto, single or ddp with optim=muon"),
    (["optim=muon", "optim.name=mine", "trainer.strategy=fsdp"], "trainer.strategy", "ddp with optim=muon"),  # a label
    (["optim.betas=0.9"], "optim.betas", "two numbers in [0, 1)"),  # a TypeError in the message's making
    (["optim.eps=0"], "optim.eps", "> 0"),
    (["optim.weight_decay=-0.1"], "optim.weight_decay", "≥ 0"),
    (["data.vocab_size=100"], "data.vocab_size", "≥ 257"),
    (["data.val_fraction=0"], "data.val_fraction", "(0, 1)"),
    (["data.on_decode_error=ignore"], "data.on_decode_error", "skip, replace, error"),
    (["data.document_mask=yes"], "data.document_mask", "true, false"),
    (["data.special_tokens='<|endoftext|>'"], "data.special_tokens", "a list of tokens"),
    (["data.exclude=tests"], "data.exclude", "a list of directory names"),
    (["trainer.seed=-1"], "trainer.seed", "an integer in [0, 2**63)"),
    (["trainer.seed=99999999999999999999"], "trainer.seed", "an integer in [0, 2**63)"),  # torch overflowed
    (["model.reset_positions=true"], "model.reset_positions", "unless data.document_mask=true"),
    (["data=mixture", "data.sources.docs.weight=0"], "data.sources.docs.weight", "> 0"),
    (["data=mixture", "data.sources.docs.weight=inf"], "data.sources.docs.weight", "a finite number > 0"),
    (["data=text_files", "data.path=1"], "data.path", "a file, a directory or a glob"),
    (["data=text_files", "data.path=[]"], "data.path", "a file, a directory or a glob"),
    (["data=mixture", "data.sources.docs.path=[docs,2]"], "data.sources.docs.path", "or a list"),
    (["data=text_files", "data.path=x", "data.streaming=maybe"], "data.streaming", "true, false"),
    (["data=hub", "data.name=json", "data.data_files=1"], "data.data_files", "files, a glob or a list"),
    (["data=hub", "data.name=json", "data.data_files={train: 1}"], "data.data_files", "or {split: those}"),
    (["data=hub", "data.name=json", "data.text_column=[a]"], "data.text_column", "a non-empty string"),
    (["data=hub", "data.name=json", "data.val_split=train"], "data.val_split", "a split other than data.split"),
    (["data=hub", "data.name=json", "data.val_split=v", "data.val_fraction=abc"], "data.val_fraction", "(0, 1)"),
    (["data=mixture", "data.sources.docs.source=web"], "data.sources.docs.source", "builtin, text_files, hub"),
    (["data=mixture", "+data.sources.docs.val_fraction=1.5"], "data.sources.docs.val_fraction", "(0, 1)"),
    (["logger.mode=sometimes"], "logger.mode", "auto, online, offline, disabled"),
    (["logger.init_timeout=0"], "logger.init_timeout", "a number of seconds in (0, 2592000]"),
    (["logger.init_timeout=inf"], "logger.init_timeout", "a number of seconds in (0, 2592000]"),  # W&B refused it late
    (["logger=mlflow", "logger.init_timeout=nan"], "logger.init_timeout", "a number of seconds in (0, 2592000]"),
    (["logger=mlflow", "logger.init_timeout=1e30"], "logger.init_timeout", "(0, 2592000]"),  # MLflow's end overflowed
    (["trainer.sample_tokens=100000000"], "trainer.sample_tokens", "an integer in [0, 100,000]"),
    (["data.special_tokens=[a,a]"], "data.special_tokens", "a list of distinct tokens"),
    (["data.special_tokens=['<|endoftext|>',a]"], "data.special_tokens", "'a' is a byte's symbol, a token of plain"),
    (["logger.finish_timeout=0"], "logger.finish_timeout", "null or a number of seconds in (0, 2592000]"),
    (["logger.finish_timeout=inf"], "logger.finish_timeout", "null or a number of seconds in (0, 2592000]"),
    (["logger.entity=[a]"], "logger.entity", "null or a name"),
    (["logger.job_type=''"], "logger.job_type", "null or a name"),
    (["schedule.warmup_steps=-1"], "schedule.warmup_steps", "≥ 0"),
    (["trainer.max_steps=100", "schedule.warmup_steps=101"], "schedule.warmup_steps", "≤"),
    (["optim.lr=1e-3", "schedule.min_lr=1e-2"], "schedule.min_lr", "≤ the peak"),
    (["schedule.min_lr_ratio=-0.5"], "schedule.min_lr_ratio", "≥ 0"),
    (["schedule.name=triangle"], "schedule.name", "cosine"),
    (["schedule.name=.cosine"], "schedule.name", "or the dotted path of a λ(t) function"),
    (["eval=[]"], "eval", "one or more of hellaswag, multiple_choice, next_line, perplexity, got []"),
    (["logger=[]"], "logger", "(logger=none: metrics.jsonl and the console alone), got []"),
    (["logger.sinks=abc"], "logger.sinks", "must map each name to its settings (or be null)"),
    (["eval.evals=5"], "eval.evals", "must map each name to its settings (or be null)"),
    (["optim=muon", "optim.muon=5"], "optim.muon", "the Muon settings (a mapping"),
]


@pytest.mark.parametrize("overrides,key,allowed", BAD_CONFIGS, ids=[" ".join(c[0]) for c in BAD_CONFIGS])
def test_a_bad_value_is_one_line_naming_the_key_what_is_allowed_and_what_was_given(overrides, key, allowed):
    with pytest.raises(USER_ERRORS) as err:
        check_config(compose_config(overrides))
    message = str(err.value)
    assert "\n" not in message and message.startswith(key) and allowed in message and ", got " in message, message


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_group_option_composes_and_passes_the_checks(group, option, tmp_path):
    overrides = [f"{group}={option}"] + (["data.name=owner/dataset"] if option == "hub" else [])
    overrides += ["data.path=corpus.txt"] if option == "text_files" else []
    if option == "tabulated":  # its knots are a file, ending at T (500)
        (tmp_path / "knots.csv").write_text("update,lambda\n400,1.0\n500,0.1\n")
        overrides += [f"schedule.knots={tmp_path / 'knots.csv'}"]
    cfg = compose_config(overrides)
    check_config(cfg)
    budget = cfg.trainer.max_tokens or cfg.trainer.max_time
    assert (cfg.trainer.max_steps is None) == bool(budget)  # a budget replaces the default T, never both


def test_the_public_keys_are_in_the_default_config():
    cfg = compose_config()
    expected = {
        "optim": ("lr", "betas", "eps", "weight_decay"),
        "schedule": ("name", "warmup_steps", "min_lr", "min_lr_ratio"),
        "trainer": (
            "max_steps",
            "max_tokens",
            "max_time",
            "batch_size",
            "grad_accum_steps",
            "eval_every",
            "eval_batches",
            "ckpt_every",
            "seed",
            "device",
            "precision",
            "compile",
            "resume",
        ),
        "model": ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias"),
        "data": ("vocab_size", "cache_dir"),
        "logger": ("sinks", "mode", "project", "group"),
        "eval": ("evals",),
    }
    for group, keys in expected.items():
        assert [k for k in keys if k not in cfg[group]] == [], group


def test_fp16_on_the_cpu_is_refused():
    with pytest.raises(ConfigError, match=r"trainer.precision must be fp32 or bf16 on the CPU .* got 'fp16'"):
        resolve_precision("fp16", torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_on_a_machine_without_cuda_is_refused():
    with pytest.raises(ConfigError, match=r"^trainer.device must be auto or cpu on this machine .* got 'cuda'$"):
        resolve_device("cuda")


def test_bf16_on_a_gpu_without_bf16_is_refused(monkeypatch):
    """The message for an older GPU (V100, T4); the GPU itself is absent here, so torch.cuda answers as one would."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100-SXM2-16GB")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    with pytest.raises(ConfigError, match=r"trainer.precision must be fp16 or fp32 on Tesla V100.*got 'bf16'"):
        resolve_precision("bf16", torch.device("cuda", 0))


def test_a_wandb_entity_of_digits_is_a_name():
    check_config(compose_config(["logger.entity=12345", "logger.job_type=2024"]))  # Hydra reads them as ints


def test_bf16_on_a_gpu_that_only_emulates_it_is_named_with_its_cost_and_auto_takes_fp16(monkeypatch, caplog):
    """torch counts emulation as support unless asked: a V100 or T4 says yes to is_bf16_supported()."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_precision("auto", torch.device("cuda", 0)) == "fp16"
    with caplog.at_level("WARNING", logger="train"):
        assert resolve_precision("bf16", torch.device("cuda", 0)) == "bf16"
    assert [r.message for r in caplog.records] == [
        "trainer.precision=bf16: emulated on Tesla T4 (no bf16 arithmetic): slow, slower than its fp16"
    ]


def test_fp8_on_the_cpu_is_refused():
    with pytest.raises(
        ConfigError,
        match=r"^trainer.precision must be fp32 or bf16 on the CPU \(fp8 needs a CUDA GPU "
        r"of compute capability 8.9 or newer\), got 'fp8'$",
    ):
        resolve_precision("fp8", torch.device("cpu"))


def test_fp8_on_a_gpu_without_fp8_tensor_cores_is_refused(monkeypatch):
    """An A100 (compute capability 8.0) has bf16 but no fp8 tensor cores; torch.cuda answers as one would."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "NVIDIA A100-SXM4-80GB")
    with pytest.raises(ConfigError, match=r"trainer.precision must be bf16, fp16 or fp32 on NVIDIA A100.*got 'fp8'$"):
        resolve_precision("fp8", torch.device("cuda", 0))


def test_fp8_without_torchao_is_refused_naming_the_package(monkeypatch):
    import importlib.util

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^trainer.precision=fp8 needs torchao's float8 training: pip install"):
        resolve_precision("fp8", torch.device("cuda", 0))
    monkeypatch.setattr(importlib.util, "find_spec", real)
    assert resolve_precision("fp8", torch.device("cuda", 0)) == "fp8"  # an H100 with torchao: allowed


# ---- checkpoints that cannot be resumed ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_cache):
    from train import train

    run = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT_DATA_CACHE", str(data_cache))
        train(compose_config(TINY + ["trainer.max_steps=4", "trainer.eval_every=0", "trainer.sample_tokens=0"]), run)
    return run


@pytest.mark.parametrize(
    "damage,overrides,fragments",
    [
        ("truncate", [], ["state.pt", "damaged since it was saved", "no earlier intact checkpoint"]),
        ("garbage", [], ["state.pt", "damaged since it was saved"]),
        (None, ["model.n_embd=64"], ["another shape", "n_embd 32 → 64"]),
        (None, ["data.vocab_size=448"], ["vocab_size 384 → 448"]),
        (None, ["trainer.resume=false"], ["trainer.resume=false", "already holds checkpoints"]),
    ],
    ids=["truncated", "corrupt", "another-shape", "another-vocab", "resume-false"],
)
def test_a_checkpoint_that_cannot_be_resumed_is_refused_and_left_as_it_was(
    damage, overrides, fragments, finished_run, tmp_path, tiny_train
):
    run = shutil.copytree(finished_run, tmp_path / "run")
    state = run / "checkpoints" / "step-00000004" / "state.pt"
    if damage == "truncate":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "garbage":
        state.write_bytes(b"not a checkpoint at all" * 100)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(USER_ERRORS) as err:
        tiny_train(run, ["trainer.max_steps=6", *overrides])
    assert "\n" not in str(err.value) and all(f in str(err.value) for f in fragments), str(err.value)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing written or clobbered


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_what_the_command_line_chooses_wins_over_an_experiment(experiment):
    own = compose_config([f"experiment={experiment}"], return_hydra_config=True).hydra.runtime.choices
    for group in ("model", "schedule", "data", "logger"):
        other = next(o for o in group_options(group) if o not in (own[group], "hub", "text_files"))
        cfg = compose_config(
            [f"experiment={experiment}", f"{group}={other}", "trainer.seed=7"], return_hydra_config=True
        )
        assert cfg.hydra.runtime.choices[group] == other, (experiment, group)
        if group == "schedule":
            assert cfg[group].name == other, (experiment, group)
        if group == "logger":
            assert list(cfg.logger.sinks) == ([] if other == "none" else [other]), (experiment, other)
        assert cfg.trainer.seed == 7  # a key given on the command line wins too


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_experiment_takes_a_token_budget_in_place_of_its_updates(experiment):
    cfg = compose_config([f"experiment={experiment}", "trainer.max_tokens=1000000"])
    if cfg.trainer.max_time is not None:  # a recipe of its own budget: one more key to give way
        cfg = compose_config([f"experiment={experiment}", "trainer.max_tokens=1000000", "trainer.max_time=null"])
    check_config(cfg)
    assert budget_key(cfg.trainer) == "max_tokens" and cfg.trainer.max_steps is None


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_experiment_passes_the_checks_under_every_logger(experiment):
    for logger in group_options("logger"):  # a recipe sets no key one logger has and another lacks
        check_config(compose_config([f"experiment={experiment}", f"logger={logger}"]))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optim.lr=fast"], "optim.lr must be a number > 0, got 'fast'"),
        (["trainer.max_steps=1e3"], "trainer.max_steps must be an integer > 0 (write 1000, without a decimal point"),
        (
            ["schedule=wsd", "schedule.warmup_steps=0.9"],
            "schedule.warmup_steps (0.9) and schedule.decay_fraction (0.2) do not fit together: warmup + decay = 450 + "
            "100 > trainer.max_steps (500)",
        ),
        (
            ["+eval.evals.multiple_choice.path=items.jsonl"],  # with +: the entry is made, without what to build
            "eval.evals.multiple_choice is an entry of eval=multiple_choice, which is not chosen; choose it or drop",
        ),
        (["eval.evals.next_line._target_=null"], "eval.evals.next_line._target_ must be the dotted path of a class"),
        (
            ["schedule=inverse_sqrt", "schedule.cooldown_steps=480"],
            "schedule.warmup_steps (0.1) and schedule.cooldown_steps (480) do not fit together: warmup + cooldown = "
            "50 + 480 > trainer.max_steps (500)",
        ),
    ],
)
def test_a_message_says_what_is_wrong_with_the_value_given(overrides, message):
    with pytest.raises(USER_ERRORS, match="^" + re.escape(message)):
        check_config(compose_config(overrides))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["+trainer.max_step=100"], "trainer.max_step is not a key of trainer; did you mean trainer.max_steps"),
        (["+schedule.decay_fraction=0.5"], "schedule.decay_fraction is a key of schedule=wsd, not of schedule=cosine"),
        (
            ["+model.foo=1"],
            "model.foo is not a key of model; it has model.activation, model.activation_checkpointing, model.arch",
        ),
        (["+data.pth=x"], "data.pth is not a key of data=builtin; data=text_files has data.path (choose it"),
        (["+seed=3"], "seed is not a key of this config; did you mean trainer.seed"),
    ],
)
def test_a_key_the_chosen_options_do_not_define_is_refused_with_the_closest_known_ones(overrides, message):
    """Appended with +, or belonging to another option of the group: such a key would be carried and ignored."""
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        check_config(compose_config(overrides))


def test_a_key_the_docs_list_but_the_chosen_entry_does_not_set_is_suggested_with_a_plus():
    """docs/data.md lists a source's max_bytes; the mixture's stdlib entry does not set it, so Hydra refuses it."""
    from training.config import check_overrides

    with pytest.raises(ConfigError, match=re.escape("add it with +data.sources.stdlib.max_bytes=…")):
        check_overrides(["data=mixture", "data.sources.stdlib.max_bytes=1000"])
    check_overrides(["data=mixture", "+data.sources.stdlib.max_bytes=1000"])  # as suggested: it composes
    check_config(compose_config(["data=mixture", "+data.sources.stdlib.max_bytes=1000"]))
    for typo, meant in [("max_byte", "max_bytes"), ("weigth", "weight")]:  # a typo gets no plus: the key it means
        with pytest.raises(
            ConfigError,
            match=rf"^data.sources.stdlib.{typo} is not a key of a source; did you mean data.sources.stdlib.{meant}\?$",
        ):
            check_overrides(["data=mixture", f"data.sources.stdlib.{typo}=1000"])
    with pytest.raises(ConfigError, match=r"^data.sources.stdlib.vocab_size: the sources of a mixture share it; set"):
        check_overrides(["data=mixture", "data.sources.stdlib.vocab_size=512"])  # where a plus leads nowhere


def test_a_key_a_forks_yaml_file_adds_is_checked_like_the_templates(tmp_path, monkeypatch):
    """A fork's optimizer file in conf/optim/ with a key of its own: accepted, and a typo of it named."""
    import shutil

    import scheduling.spec
    import training.config

    conf = tmp_path / "conf"
    shutil.copytree(training.config.CONF, conf)
    (conf / "optim" / "mine.yaml").write_text(
        "_target_: training.optim.adamw\nname: mine\nlr: 1.0e-3\nbetas: [0.9, 0.95]\neps: 1.0e-8\nweight_decay: 0.0\n"
    )
    monkeypatch.setattr(training.config, "CONF", conf)  # the checks' reads of conf/
    monkeypatch.setattr(scheduling.spec, "CONF", conf)  # and the composer's
    check_config(compose_config(["optim=mine"]))
    with pytest.raises(ConfigError, match=r"^optim.bettas is not a key of optim; did you mean optim.betas"):
        training.config.check_overrides(["optim=mine", "optim.bettas=[0.9,0.9]"])
    with pytest.raises(ConfigError, match=r"^optim.muon is a key of optim=muon, not of optim=mine"):
        check_config(compose_config(["optim=mine", "+optim.muon={lr: 0.02}"]))
    # A copy of adamw.yaml that kept its name, with a key of its own; a file whose name is not its file's.
    (tmp_path / "fork_optim.py").write_text(
        "def adamw(model, device, *, embed_lr_scale, **keys): ...\ndef sgd(model, device, *, lr, momentum, name): ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    adamw = (conf / "optim" / "adamw.yaml").read_text().replace("training.optim.adamw", "fork_optim.adamw")
    (conf / "optim" / "adamw_fork.yaml").write_text(adamw + "embed_lr_scale: 0.5\n")
    (conf / "optim" / "sgd_file.yaml").write_text("_target_: fork_optim.sgd\nname: sgd\nlr: 0.1\nmomentum: 0.9\n")
    check_config(compose_config(["optim=adamw_fork"]))
    check_config(compose_config(["optim=sgd_file"]))
    with pytest.raises(ConfigError, match=r"^optim.embed_lr_scale is a key of optim=adamw_fork, not of optim=adamw"):
        check_config(compose_config(["+optim.embed_lr_scale=0.5"]))


def test_a_forks_broken_yaml_file_is_named_when_chosen_and_no_concern_of_a_run_that_does_not_choose_it(
    tmp_path, monkeypatch
):
    import shutil

    import scheduling.spec
    import training.config

    conf = tmp_path / "conf"
    shutil.copytree(training.config.CONF, conf)
    (conf / "optim" / "sgd.yaml").write_text("_target_: fork.sgd\nlr: [0.1\n")  # an unclosed list
    (conf / "logger" / "listed.yaml").write_text("- a\n- b\n")  # YAML, but not a mapping of keys
    monkeypatch.setattr(training.config, "CONF", conf)
    monkeypatch.setattr(scheduling.spec, "CONF", conf)
    check_config(compose_config([]))  # the default optim=adamw: every group's files were read
    with pytest.raises(ConfigError, match=r"^optim.zzz is not a key of optim; it has optim._target_"):
        check_config(compose_config(["+optim.zzz=1"]))  # the other options' keys are looked through too
    with pytest.raises(ConfigError, match=r"^optim.bettas is not a key of optim; did you mean optim.betas"):
        training.config.check_overrides(["optim.bettas=[0.9,0.9]"])
    for argv in (["optim=sgd"], ["-m", "optim=adamw,sgd"]):
        with pytest.raises(ConfigError, match=r"^\S+/conf/optim/sgd.yaml, line 3: not valid YAML \(expected ',' or"):
            training.config.check_overrides(argv)
    with pytest.raises(ConfigError, match=r" got \['a', 'b'\]; \S+/conf/logger/listed.yaml is not a YAML mapping of"):
        check_config(compose_config(["logger=listed"]))  # chosen: named, though it is no option
    (conf / "optim" / "latin1.yaml").write_bytes(b"lr: 3e-4  # caf\xe9\n")
    with pytest.raises(ConfigError, match=r"^\S+/conf/optim/latin1.yaml: not UTF-8 text \(byte 0xe9 at 15\)$"):
        training.config.check_overrides(["optim=latin1"])


def test_a_near_key_is_judged_past_the_groups_name_which_every_key_shares():
    with pytest.raises(ConfigError, match=r"^logger.nosuch is not a key of logger; it has logger.sinks"):
        check_config(compose_config(["logger=csv", "+logger.nosuch=1"]))  # "logger.notes" is no nearer than "notes"
    with pytest.raises(ConfigError, match=r"^logger.projct is not a key of logger=csv; logger=wandb has logger.pro"):
        check_config(compose_config(["logger=csv", "+logger.projct=1"]))


def test_a_sweep_is_refused_before_it_starts_only_when_every_job_would_be():
    from model import ModelConfigError
    from training.config import check_overrides

    with pytest.raises(ModelConfigError, match=r"^model.n_embd must be divisible by model.n_head \(3\), got 128$"):
        check_overrides(["-m", "model=nano", "model.n_head=3,5", "trainer.seed=1,2"])
    check_overrides(["-m", "model=nano", "model.n_head=3,4"])  # job 1 runs; job 0 is refused in its turn
    check_overrides(["model=nano", "hydra.mode=MULTIRUN", "model.n_head=3,4"])


def test_a_preset_that_does_not_extend_base_is_named_not_refused_for_a_symptom(tmp_path, monkeypatch):
    import shutil

    import scheduling.spec
    import training.config

    conf = tmp_path / "conf"
    shutil.copytree(training.config.CONF, conf)
    (conf / "model" / "mine.yaml").write_text("n_layer: 2\nn_head: 2\nn_embd: 32\n")  # no defaults: [base, _self_]
    monkeypatch.setattr(training.config, "CONF", conf)
    monkeypatch.setattr(scheduling.spec, "CONF", conf)
    check_config(compose_config(["model=nano"]))
    with pytest.raises(ConfigError) as e:
        check_config(compose_config(["model=mine"]))
    assert str(e.value) == (
        "model lacks model.name, model.arch, model.block_size … of conf/model/base.yaml (conf/model/mine.yaml does not "
        "extend it): a preset starts with `defaults: [base, _self_]`"
    )


def test_a_forks_entry_without_its_target_is_named_as_such_not_as_an_option_not_chosen(tmp_path, monkeypatch):
    import shutil

    import scheduling.spec
    import training.config

    conf = tmp_path / "conf"
    shutil.copytree(training.config.CONF, conf)
    (conf / "logger" / "steps.yaml").write_text("sinks:\n  steps:\n    target: my_sinks.Steps\n")  # not _target_
    monkeypatch.setattr(training.config, "CONF", conf)
    monkeypatch.setattr(scheduling.spec, "CONF", conf)
    with pytest.raises(ConfigError, match=r"^logger.sinks.steps.target: did you mean logger.sinks.steps._target_, th"):
        check_config(compose_config(["logger=[csv,steps]"]))
    (conf / "logger" / "steps.yaml").write_text("sinks:\n  steps:\n    path: steps.txt\n")  # none at all
    with pytest.raises(ConfigError, match=r"^logger.sinks.steps._target_ must be the dotted path .* \(conf/logger/"):
        check_config(compose_config(["logger=[csv,steps]"]))


def test_a_model_key_written_in_conf_model_alone_names_gptconfig(tmp_path, monkeypatch):
    """A fork's new model key in base.yaml, without its field in GPTConfig (which the model's code reads)."""
    import shutil

    import scheduling.spec
    import training.config

    conf = tmp_path / "conf"
    shutil.copytree(training.config.CONF, conf)
    base = (conf / "model" / "base.yaml").read_text()
    with open(conf / "model" / "base.yaml", "a") as f:
        f.write("z_loss: 0.0           # weight of the squared log-partition term\n")
    monkeypatch.setattr(training.config, "CONF", conf)
    monkeypatch.setattr(scheduling.spec, "CONF", conf)
    with pytest.raises(ConfigError, match=r"^model.z_loss is in conf/model/ but not a field of GPTConfig \(model/gpt"):
        check_config(compose_config([]))
    (conf / "model" / "base.yaml").write_text(base)
    (conf / "model" / "pico.yaml").write_text("defaults: [base, _self_]\nname: pico\nn_layers: 2\n")  # a typo
    with pytest.raises(ConfigError, match=r"^model.n_layers \(conf/model/pico.yaml\) is not a key of model; did you "):
        check_config(compose_config(["model=pico"]))


def test_a_gptconfig_field_without_its_line_in_conf_model_says_where_it_goes(tmp_path, monkeypatch):
    """The other half: a field of GPTConfig whose line in base.yaml is missing is named, not blamed on the presets."""
    import shutil

    import scheduling.spec
    import training.config

    conf = tmp_path / "conf"
    shutil.copytree(training.config.CONF, conf)
    base = conf / "model" / "base.yaml"
    base.write_text("".join(line for line in base.read_text().splitlines(True) if not line.startswith("dropout:")))
    monkeypatch.setattr(training.config, "CONF", conf)
    monkeypatch.setattr(scheduling.spec, "CONF", conf)
    with pytest.raises(ConfigError, match=r"^model.dropout is a field of GPTConfig that conf/model/base.yaml lacks; "):
        training.config.check_overrides(["model=micro", "model.dropout=0.1"])
    with pytest.raises(ConfigError, match=r"^model.dropout is a field of GPTConfig that conf/model/base.yaml lacks; "):
        check_config(compose_config(["model=micro", "+model.dropout=0.1"]))  # added with +: composed, then checked


def test_a_global_batch_that_the_ranks_do_not_divide_is_refused_before_any_work(monkeypatch):
    """Under torchrun (WORLD_SIZE) the check counts the ranks: 128 tokens over 2 ranks of 4 × 32 cannot be."""
    overrides = ["model.block_size=32", "trainer.batch_size=4", "trainer.global_batch_tokens=128"]
    check_config(compose_config(overrides))  # one process: 1 micro-batch
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"^trainer.global_batch_tokens must be a multiple of .* 4 × 32 × 2 = 256"):
        check_config(compose_config(overrides))


def test_a_mixture_takes_sources_the_user_names():
    check_config(compose_config(["data=mixture", "+data.sources.web={source: hub, name: owner/set, weight: 2}"]))
    with pytest.raises(USER_ERRORS, match=r"^data\.sources\.web\.nmae is not a key of a hub source; it has "):
        check_config(compose_config(["data=mixture", "+data.sources.web={source: hub, nmae: owner/set, weight: 2}"]))


def test_a_mistyped_key_or_option_is_one_line_before_hydra_runs():
    from training.config import check_overrides

    with pytest.raises(ConfigError, match=r"^trainer.max_step is not a key of trainer; did you mean trainer.max_steps"):
        check_overrides(["trainer.max_step=100"])
    with pytest.raises(
        ConfigError, match=r"""^trainer.sample_prompt: cannot parse 'trainer.sample_prompt=def f\(x\):' \("""
    ):
        check_overrides(["trainer.sample_prompt=def f(x):"])  # which override, and how to quote it
    with pytest.raises(ConfigError, match=r"^schedule=cosin is not an option of schedule; did you mean schedule=cos"):
        check_overrides(["-m", "schedule=cosin,wsd"])  # a sweep's values are options too
    with pytest.raises(
        ConfigError, match=r"^eval.evals.next_line.choice is not a key of eval.evals.next_line; did you"
    ):
        check_overrides(["eval.evals.next_line.choice=3"])  # the entry's own keys: "... mean choices?"
    with pytest.raises(  # another option's key is named with its option, not offered as a key of this one
        ConfigError, match=r"^optim.momentun is not a key of optim=adamw; optim=muon has optim.muon.momentum \(choose"
    ):
        check_overrides(["optim.momentun=0.5"])
    with pytest.raises(
        ConfigError, match=r"^optim.zzz is not a key of optim; it has optim._target_, .*weight_decay$"
    ) as e:
        check_overrides(["optim.zzz=1"])
    assert "muon" not in str(e.value)  # the chosen option's keys alone
    with pytest.raises(ConfigError, match=r"^optim.zzz is not a key of optim; it has optim._target_, ") as e:
        check_config(compose_config(["+optim.zzz=1"]))  # appended with +: found in the composed config
    assert "muon" not in str(e.value)
    with pytest.raises(ConfigError, match=r"^logger.sinks.csv.foo is not a key of logger.sinks.csv; it has _target_$"):
        check_overrides(["logger=csv", "logger.sinks.csv.foo=1"])  # not "did you mean logger.sinks.csv?"
    with pytest.raises(ConfigError, match=r"^eval.evals.next_line.limit is a key of eval=next_line only; choose it"):
        check_overrides(["eval=[perplexity]", "eval.evals.next_line.limit=5"])  # an entry not chosen
    with pytest.raises(ConfigError, match=r"^schedule=wds is not an option of schedule; did you mean schedule=wsd"):
        check_overrides(["-m", "schedule=cosine,wds"])  # each of them, not only the first
    with pytest.raises(ConfigError, match=r"^eval=nxt_line is not an option of eval; did you mean eval=next_line"):
        check_overrides(["eval=[perplexity,nxt_line]"])  # an option in a list
    with pytest.raises(ConfigError, match=r"^logger=wandd is not an option of logger; did you mean logger=wandb"):
        check_overrides(["logger=[csv,wandd]"])
    with pytest.raises(ConfigError, match=r"^schedule.decay_fraction is a key of schedule=wsd only; choose it or drop"):
        check_overrides(["-m", "schedule=wsd,cosine", "schedule.decay_fraction=0.3"])  # a key of one option only
    check_overrides(["-m", "schedule=cosine,wsd", "optim.lr=1e-3,3e-3", "hydra.run.dir=x"])
    check_overrides(["--cfg", "job", "schedule=wsd", "hydra.run.dir=x"])
    with pytest.raises(ConfigError, match=r"^--cfg and -m: give one of them"):  # Hydra's traceback otherwise
        check_overrides(["--cfg", "job", "-m", "schedule=cosine,wsd"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("hydra.jobb.chdir=true", r"^hydra\.jobb\.chdir is not a key of hydra; did you mean hydra\.job\?$"),
        (
            "hydra.launcher.n_jobs=2",
            r"^hydra\.launcher\.n_jobs is not a key of hydra\.launcher; it has hydra\.launcher\._target_$",
        ),
        (
            "hydra/launcher=basicc",
            r"^hydra/launcher=basicc is not an option of hydra/launcher; did you mean hydra/launcher=basic\?",
        ),
        ("hydra.job.chdir=maybe", r"^hydra\.job\.chdir=maybe: Value 'maybe' is not a valid bool"),
        ("hydra.job.env_set.FOO=1", r"^hydra\.job\.env_set\.FOO is not a key of hydra\.job\.env_set; add it with \+"),
        ("model=1", r"^model=1 is not an option of model; it has base, "),
        ("+trainer.seed=3", r"^\+trainer\.seed: the config already has trainer\.seed; set it without the \+$"),
        ("+hydra.run.dir=x", r"^\+hydra\.run\.dir: the config already has hydra\.run\.dir; set it without the \+$"),
    ],
)
def test_hydras_own_keys_and_a_group_given_no_name_are_one_line_too(override, message):
    from training.config import check_overrides

    with pytest.raises(ConfigError, match=message):
        check_overrides(["trainer.max_steps=10", override])


def test_hydras_own_keys_that_exist_pass_and_what_hydra_alone_judges_is_left_to_it():
    from training.config import check_overrides

    check_overrides(["hydra.job.chdir=true", "hydra/launcher=basic", "+hydra.job.env_set.X=1", "~experiment"])
    check_overrides(["hydra.sweeper.params.optim.lr=1,2"])  # Hydra's own report: params is null until set


def test_bf16_on_a_cpu_without_bf16_instructions_is_named_as_emulated_and_slow(monkeypatch, caplog):
    from training import distributed

    monkeypatch.setattr(distributed, "cpu_has_fast_bf16", lambda: False)
    with caplog.at_level("WARNING"):
        assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert [r.message for r in caplog.records] == [
        "trainer.precision=bf16: emulated on this CPU (no bf16 instructions): slow, slower than fp32 here"
    ]
    monkeypatch.setattr(distributed, "cpu_has_fast_bf16", lambda: True)
    caplog.clear()
    resolve_precision("bf16", torch.device("cpu"))
    assert not caplog.records


def test_the_default_sample_prompt_ends_on_no_token_of_its_own(data_cache, monkeypatch):
    """A prompt ending in a space leaves that space as a token of its own, and the model then starts its
    continuation with another: the sample would read "def  def"."""
    from data import prepare

    monkeypatch.setenv("GPT_DATA_CACHE", str(data_cache))
    cfg = compose_config(TINY)
    tokenizer = prepare(cfg.data).tokenizer()
    pieces = [tokenizer.decode([i]) for i in tokenizer.encode(cfg.trainer.sample_prompt).ids]
    assert pieces and all(piece.strip() for piece in pieces), pieces


@pytest.mark.parametrize("key", ["schedule.warmup_steps", "data.val_fraction", "optim.betas", "trainer.seed"])
def test_deleting_a_setting_is_refused_in_one_line_as_it_would_read_as_the_codes_default(key):
    from training.config import check_overrides

    with pytest.raises(ConfigError, match=rf"^~{re.escape(key)}: a setting cannot be deleted .*; set it: {key}=…$"):
        check_overrides([f"~{key}"])


def test_several_values_without_a_multirun_are_one_line_saying_how_to_sweep_or_give_a_list():
    from training.config import check_overrides

    with pytest.raises(ConfigError, match=r"^optim.lr=1e-3,3e-3: several values are a sweep; run it with -m \("):
        check_overrides(["optim.lr=1e-3,3e-3"])
    check_overrides(["-m", "optim.lr=1e-3,3e-3"])
    check_overrides(["--multirun", "optim.lr=1e-3,3e-3"])
    check_overrides(["experiment=lr_schedule_sweep", "optim.lr=1e-3,3e-3"])  # its hydra.mode is MULTIRUN


def test_a_sweep_the_sweeper_expands_itself_is_left_to_it():
    from training.config import check_overrides

    check_overrides(["-m", "schedule=glob(cos*)", "trainer.seed=range(1,3)"])
    with pytest.raises(ConfigError, match=r"^optim.lr=interval\(0.001,0.01\): interval\(\) is a range a sampling swe"):
        check_overrides(["-m", "optim.lr=interval(0.001,0.01)"])  # Hydra's basic sweeper: a traceback
    check_overrides(["-m", "schedule=glob(wsd)", "schedule.decay_fraction=0.5"])  # a key of the options it picks
    with pytest.raises(ConfigError, match=r"^trainer.sed is not a key of trainer"):  # the rest is still checked
        check_overrides(["-m", "optim.lr=interval(0.001,0.01)", "trainer.sed=1"])


def test_a_group_a_named_entry_and_hydras_own_keys_may_still_be_deleted():
    from training.config import check_overrides

    check_overrides(["~experiment", "logger=[csv,wandb]", "~logger.sinks.csv", "~eval.evals.next_line"])
    check_overrides(["data=mixture", "~data.sources.docs", "~hydra.job.chdir"])


def test_a_schedule_of_conf_chosen_by_its_name_alone_is_refused_naming_the_option():
    """schedule.name=polynomial keeps cosine's file and leaves polynomial's power at the code's 1.0, not conf's 2.0:
    the run would decay linearly, and say it ran polynomial."""
    with pytest.raises(USER_ERRORS) as err:
        check_config(compose_config(["schedule.name=polynomial"]))
    assert str(err.value) == (
        "schedule.name=polynomial: choose it with schedule=polynomial, whose file sets schedule.power; "
        "schedule.name alone leaves them at the code's defaults"
    )
    check_config(compose_config(["schedule=polynomial"]))
    check_config(compose_config(["schedule=polynomial", "schedule.name=polynomial"]))
