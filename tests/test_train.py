"""train.py's ``train``, in-process on tiny settings: the run directory, the logged lr against the formula, the
loss; and the one thing only a fresh process shows, the allocator setting a CPU run makes."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys

from tests.conftest import ROOT, read_metrics, train_records

PEAK, FLOOR, W, T = 2e-3, 2e-4, 5, 30


def cosine_lr(t: int) -> float:
    """The cosine schedule written out: t/W during warmup, then c·(1 − r) + r down to the floor r at T."""
    if t < W:
        return PEAK * t / W
    c = 0.5 * (1 + math.cos(math.pi * (t - W) / (T - W)))
    return PEAK * (c * (1 - FLOOR / PEAK) + FLOOR / PEAK)


def test_a_tiny_run_logs_the_formula_lr_its_loss_falls_and_it_writes_the_run_directory(tmp_path, tiny_train, caplog):
    args = [
        f"trainer.max_steps={T}",
        f"schedule.warmup_steps={W}",
        f"optim.lr={PEAK}",
        f"schedule.min_lr={FLOOR}",
        "trainer.eval_every=10",
        "trainer.grad_accum_steps=2",
    ]
    with caplog.at_level("INFO"):
        run = tiny_train(tmp_path / "run", args)
    records = train_records(run)
    assert sorted(records) == list(range(T))
    for t, r in records.items():
        assert math.isclose(r["train/lr"], cosine_lr(t), rel_tol=1e-12, abs_tol=1e-18), t
        for key in (
            "train/grad_norm",
            "train/tokens_per_sec",
            "train/mfu",
            "train/step_time",
            "tokens",
            "train/data_wait",
            "train/peak_memory_gb",
        ):
            assert key in r, key
    assert records[T - 1]["tokens"] == T * 2 * 4 * 32
    first = sum(records[t]["train/loss"] for t in range(3)) / 3
    last = sum(records[t]["train/loss"] for t in range(T - 3, T)) / 3
    assert last < first - 0.5, (first, last)
    evals = [r for r in read_metrics(run) if "val/loss" in r]
    assert [e["step"] for e in evals] == [0, 10, 20, 30]
    assert evals[-1]["val/loss"] < evals[0]["val/loss"] and all(e["val/bpb"] > 0 for e in evals)
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step-{T:08d}"
    assert {p.name for p in (run / "plots").iterdir()} == {"loss.png", "lr.png"}
    assert "sample:\n" in caplog.text and "best val loss" in caplog.text


# Page faults per update of a small model's real update, in a fresh process: its malloc starts from glibc's
# defaults, then the run's setting is made for the device named on the command line (or not, off the CPU).
FAULTS_PER_UPDATE = """
import contextlib, resource, sys, torch
from torch.optim.lr_scheduler import LambdaLR
from model import GPT, GPTConfig
from training.distributed import keep_freed_memory
from training.engine import train_update
from training.optim import build_optimizer

kept = keep_freed_memory(torch.device(sys.argv[1]))
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=4096, block_size=64, n_layer=1, n_head=4, n_embd=128))
optim = {"_target_": "training.optim.adamw", "lr": 1e-3, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.1,
         "fused": False}
optimizer = build_optimizer(model, optim, torch.device("cpu"))
scheduler = LambdaLR(optimizer, lambda t: 1.0)
x = torch.randint(0, 4096, (8, 64))
def update():
    train_update(model, optimizer, scheduler, [(x, x.roll(-1, 1))], device=torch.device("cpu"),
                 autocast=contextlib.nullcontext())
for _ in range(3):
    update()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    update()
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def test_on_a_cpu_an_update_reuses_the_memory_the_last_one_freed():
    """A CPU run has glibc's malloc keep freed memory, instead of giving an update's pages back to the kernel
    and faulting them in again at the next one."""

    def faults(device: str) -> tuple[str, float]:
        """The median of three fresh processes: where the heap's top lands varies, and now and then glibc's
        default cannot trim it either."""
        runs = [
            subprocess.run(
                [sys.executable, "-c", FAULTS_PER_UPDATE, device], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.split()
            for _ in range(3)
        ]
        return runs[0][0], statistics.median(float(out[1]) for out in runs)

    kept, with_setting = faults("cpu")
    left, glibc_default = faults("cuda")  # off the CPU the setting is not made (no GPU is needed to see that)
    assert (kept, left) == ("True", "False")
    assert with_setting < glibc_default / 3, (with_setting, glibc_default)
