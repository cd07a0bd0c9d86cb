"""The entry points as processes: bad input of every kind (a config value, a data file, a checkpoint) ends with
one ``error:`` line and exit code 2, no traceback and nothing written; ``--cfg job`` prints the config."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY, run_train

# (entry point, arguments, the start of the one line on stderr); {corrupt} is a checkpoint folder of garbage.
BAD_INPUTS = [
    ("train.py", ["trainer.max_steps=0"], "error: trainer.max_steps must be an integer > 0, got 0"),
    (
        "train.py",
        ["trainer.max_step=100"],
        "error: trainer.max_step is not a key of trainer; did you mean trainer.max_steps",
    ),
    ("train.py", ["model=nanoo"], "error: model=nanoo is not an option of model; did you mean model=nano?"),
    ("train.py", ["optim.lr=1e-3,3e-3"], "error: optim.lr=1e-3,3e-3: several values are a sweep; run it with -m"),
    ("train.py", ["hydra.run.dirr=x"], "error: hydra.run.dirr is not a key of hydra.run; did you mean hydra.run.dir?"),
    ("train.py", ["model=null"], "error: model=null is not an option of model; it has base, gpt2,"),
    ("train.py", ["experiment=null"], "error: experiment=null: leave experiment out to choose none"),
    (
        "train.py",
        ["model.n_embd=130", "model.n_head=4"],
        "error: model.n_embd must be divisible by model.n_head (4), got 130",
    ),
    (
        "train.py",
        ["schedule=wsd", "schedule.decay_fraction=1.5"],
        "error: schedule.decay_fraction must be a fraction of trainer.max_steps in [0, 1], got 1.5",
    ),
    (
        "train.py",
        ["data=text_files", "data.path=/no/such/corpus.txt"],
        "error: data.path: '/no/such/corpus.txt' does not exist",
    ),
    ("train.py", ["trainer.resume=/no/such/run"], "error: trainer.resume: '/no/such/run' does not exist"),
    (
        "train.py",
        ["data.tokenizer=/no/such/tokenizer.json"],
        "error: data.tokenizer: '/no/such/tokenizer.json' does not",
    ),
    (
        "train.py",
        ["data.tokenizer={corrupt}"],
        "error: data.tokenizer: '{corrupt}' is a folder; give the tokenizer.json",
    ),
    (
        "train.py",
        ["optim.lr=${{oc.env:GPT_TEMPLATE_NO_SUCH_VARIABLE}}"],  # format() reads {{ as {
        'error: optim.lr: KeyError raised while resolving interpolation: "Environment variable',
    ),
    ("train.py", ["trainer.resume={corrupt}"], "error: checkpoint {corrupt}/state.pt: cannot be read"),
    ("train.py", ["hydra.mode=MULTIRUN", "hydra.sweep.dir="], "error: hydra.sweep.dir must be a folder for the"),
    (
        "train.py",
        ["hydra.mode=MULTIRUN", "hydra.sweep.dir={corrupt}/state.pt"],
        "error: hydra.sweep.dir: '{corrupt}/state.pt' is a file",
    ),
    (
        "train.py",
        ["hydra.mode=MULTIRUN", "hydra.sweep.dir={corrupt}/state.pt/sweep"],
        "error: hydra.sweep.dir: '{corrupt}/state.pt' is a file",
    ),
    ("train.py", ["-m", "optim.lr=1e-3,2e-3", "--cfg", "job"], "error: -m and --cfg: give one of them"),
    (
        "train.py",
        ["-m", "trainer.seed=1,2", "hydra.sweep.dirr=x"],
        "error: hydra.sweep.dirr is not a key of hydra.sweep; did you mean hydra.sweep.dir",
    ),
    ("train.py", ["-m", "optim.lr=interval(0,1)"], "error: optim.lr=interval(0,1): interval() is a range a sampling"),
    ("train.py", ["-m", "trainer.seed=choice()"], "error: trainer.seed=choice(): empty choice is not legal\n"),
    ("train.py", ["-m", "optim.lr=glob(*)"], "error: optim.lr=glob(*): glob() matches a config group's options;"),
    ("train.py", ["hydra.run.dir=" + "y" * 300], "error: hydra.run.dir: a folder name of 300 bytes (yyyyy"),
    ("train.py", ["-m", "trainer.seed=1,2", "hydra.sweep.dir=" + "s" * 300], "error: hydra.sweep.dir: a folder name"),
    (  # a subdir only the launcher fills: the dir is judged alone
        "train.py",
        ["-m", "trainer.seed=1,2", "hydra.sweep.dir=" + "s" * 300, "hydra.sweep.subdir=${{hydra.job.id}}"],
        "error: hydra.sweep.dir: a folder name of 300 bytes",
    ),
    (  # the default subdir, ${hydra.job.num}, the launcher's to fill
        "train.py",
        ["-m", "trainer.seed=1,2", "hydra.sweep.subdir=${{hydra.job.num}}_" + "n" * 300],
        "error: hydra.sweep.subdir: a folder name of 302 bytes (0_nnn",
    ),
    (  # Hydra makes a job's folder before the job starts: its traceback
        "train.py",
        ["-m", "trainer.seed=1,2", "hydra.sweep.subdir=${{hydra.job.override_dirname}}", "data.cache_dir=" + "c" * 300],
        "error: hydra.sweep.subdir: a folder name of ",  # every override in it
    ),
    ("train.py", ["-m", "model=glob(zz*)"], "error: model=glob(zz*): the sweep has no jobs: the glob matches none of"),
    (  # every job refused: refused as a single run, before Hydra writes the sweep's folders
        "train.py",
        ["-m", "model.n_head=3,5", "hydra.sweep.dir=sweep"],
        "error: model.n_embd must be divisible by model.n_head (3), got 32",
    ),
    (
        "train.py",
        ["eval.evals.perplexity._target_=builtins.print"],  # built None: a TypeError at the first evaluation
        "error: eval.evals.perplexity: builtins.print built NoneType, not an evaluation",
    ),
    # sizes no machine holds: numpy's and torch's allocators refuse them as the run is built
    ("train.py", ["trainer.batch_size=100000000000"], "error: not enough memory for the run as configured (Unable"),
    ("train.py", ["model.mlp_hidden=1099511627776"], "error: not enough memory for the run as configured ("),
    ("sample.py", ["checkpoint={corrupt}"], "error: checkpoint {corrupt}/state.pt: cannot be read"),
    ("sample.py", ["checkpoint=/no/such/run"], "error: checkpoint: '/no/such/run' does not exist"),
    (
        "sample.py",
        ["checkpoint=/no/such/run", "temprature=0.5"],
        "error: temprature is not a key of this config; did you mean temperature?",
    ),
    ("export.py", ["checkpoint={corrupt}", "out=exported"], "error: checkpoint {corrupt}/state.pt: cannot be read"),
    ("export.py", ["checkpoint={corrupt}", "out=[a]"], "error: out must be a folder path (a number quoted"),
    ("sample.py", ["-m", "checkpoint={corrupt}", "temperature=0,1"], "error: -m: a sweep is train.py's; sample.py"),
    ("export.py", ["-m", "checkpoint={corrupt}", "out=a,b"], "error: -m: a sweep is train.py's; export.py runs once"),
]


@pytest.mark.parametrize("script,args,line", BAD_INPUTS, ids=[f"{s} {' '.join(a)}" for s, a, _ in BAD_INPUTS])
def test_bad_input_is_one_error_line_exit_code_2_and_nothing_written(script, args, line, tmp_path, data_cache):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "state.pt").write_bytes(b"not a checkpoint" * 64)
    args, line = [a.format(corrupt=corrupt) for a in args], line.format(corrupt=corrupt)
    work = tmp_path / "work"  # the working directory, where Hydra would put outputs/<date>/<time>/
    work.mkdir()
    cmd = [sys.executable, str(ROOT / script), *(TINY if script == "train.py" else []), *args]
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(line), proc.stderr
    assert "Traceback" not in proc.stdout
    assert list(work.iterdir()) == [] and (corrupt / "state.pt").read_bytes() == b"not a checkpoint" * 64


def test_a_glob_over_hydras_own_groups_or_a_group_placed_elsewhere_is_left_to_hydra():
    from training.config import check_overrides

    for overrides in (["hydra/job_logging=glob(std*)"], ["+model@foo=glob(*)"], ["model=glob(n*)"]):
        check_overrides(["-m", *overrides])  # Hydra's groups are Hydra's to know; model@foo is the group model


def test_a_sweep_without_jobs_is_one_line_and_no_report(tmp_path):
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *TINY, "optim.lr=range(0)", f"hydra.sweep.dir={tmp_path}/s"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr == "error: optim.lr=range(0): the sweep has no jobs: each swept key needs one value at least\n"
    assert not (tmp_path / "s").exists()  # nor multirun.yaml


def test_a_sweep_under_torchrun_is_refused_in_one_line(tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}  # as torchrun sets them
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *TINY, "optim.lr=1e-3,2e-3", f"hydra.sweep.dir={tmp_path}/s"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: a sweep (-m) cannot run under torchrun;")
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "module, args, says",
    [
        ("scheduling.forecast", ["predict"], "the following arguments are required: fit (see --help)"),
        ("scheduling.forecast", ["fitt", "run"], "argument command: invalid choice: 'fitt'"),
        (
            "scheduling.forecast",
            ["optimize", "fit.json", "--knots", "x"],
            "argument --knots: must be an integer ≥ 1, got 'x' (see --help)",
        ),
        ("scheduling.audit", ["run", "--tolerence", "0.1"], "unrecognized arguments: --tolerence 0.1 (see --help)"),
        ("scheduling.plot", ["--outt", "x.png"], "unrecognized arguments: --outt (see --help)"),
        ("training.report", [], "the following arguments are required: sweep_dir (see --help)"),
        ("training.plots", ["run", "--out"], "argument --out: expected one argument (see --help)"),
        ("training.mlflow_logger", ["upload"], "the following arguments are required: run_dir (see --help)"),
    ],
)
def test_a_bad_command_line_of_a_tool_is_one_error_line_and_exit_code_2(module, args, says, tmp_path):
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: python -m {module}"), proc.stderr
    assert f": {says}" in proc.stderr


def test_a_run_refused_in_a_run_directory_it_found_leaves_every_file_there_as_it_was(tmp_path, data_cache):
    run, args = tmp_path / "run", [*TINY, "trainer.max_steps=2", "trainer.eval_every=0", "logger=csv"]
    run_train(args, run, data_cache)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    proc = run_train([*args, "optim.lr=5e-3"], run, data_cache, check=False)  # a resume with another peak lr
    assert proc.returncode == 2 and proc.stderr.startswith("error: the checkpoint was trained with another schedule")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # .hydra/, train.log, .lock too


def test_cfg_job_prints_the_composed_config_and_runs_nothing(tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", "--cfg", "job", "model=micro", f"hydra.run.dir={tmp_path}/r"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "n_embd: 384" in proc.stdout and "schedule:" in proc.stdout and not (tmp_path / "r").exists()
