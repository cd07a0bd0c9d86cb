"""On a CUDA GPU: ``trainer.precision=fp8`` (torchao's float8 linear layers) trains as bf16 does, composes with
compile, DDP and FSDP2, and keeps full-precision checkpoints; ``model.fused_cross_entropy`` (liger-kernel) gives
the plain loss and gradients with less memory. Both need the gpu extra (torchao, liger-kernel)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from model import GPT, GPTConfig
from scheduling import Schedule, build_scheduler
from tests.conftest import TINY, run_train, train_records
from training import checkpoint, distributed
from training.engine import OK, train_update
from training.optim import build_optimizer

pytestmark = pytest.mark.cuda

OPTIM = {"_target_": "training.optim.adamw", "lr": 1e-3, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.1}
CUDA = torch.device("cuda", 0)


def needs_fp8() -> None:
    if torch.cuda.get_device_capability(CUDA) < distributed.FP8_CAPABILITY:
        pytest.skip("this GPU has no fp8 tensor cores (compute capability below 8.9)")


def config(**changes) -> GPTConfig:
    return GPTConfig(**{"vocab_size": 512, "block_size": 64, "n_layer": 2, "n_head": 4, "n_embd": 128, **changes})


def batch(seed: int = 0, rows: int = 8, shape: GPTConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    c = shape or config()
    tokens = torch.randint(0, c.vocab_size, (rows, c.block_size + 1), generator=torch.Generator().manual_seed(seed))
    return tokens[:, :-1], tokens[:, 1:]


def losses(model, raw, precision: str, strategy: str = "single", updates: int = 20) -> list[float]:
    """Train losses of ``updates`` updates on one fixed batch (which the model learns by heart)."""
    optimizer = build_optimizer(raw, OPTIM, CUDA)
    scheduler = build_scheduler(optimizer, Schedule("constant"))
    autocast = distributed.autocast(CUDA, precision if distributed.autocast_needed(strategy, CUDA) else "fp32")
    out = []
    for _ in range(updates):
        update = train_update(model, optimizer, scheduler, [batch()], device=CUDA, autocast=autocast)
        assert update.status == OK
        out.append(update.loss)
    return out


def test_fp8_swaps_the_blocks_linear_layers_and_tracks_bf16():
    needs_fp8()
    from torchao.float8.float8_linear import Float8Linear

    curves = {}
    for precision in ("bf16", "fp8"):
        torch.manual_seed(0)
        raw = GPT(config()).to(CUDA)
        model = distributed.parallelize(raw, "single", distributed.Dist(device=CUDA), precision, compile=False)
        swapped = [name for name, m in raw.named_modules() if isinstance(m, Float8Linear)]
        assert len(swapped) == (4 * raw.config.n_layer if precision == "fp8" else 0), swapped
        assert not isinstance(raw.lm_head, Float8Linear)
        curves[precision] = losses(model, raw, precision)
    bf16, fp8 = curves["bf16"], curves["fp8"]
    assert bf16[-1] < 0.7 * bf16[0] and fp8[-1] < 0.7 * fp8[0], curves
    assert max(abs(a - b) / b for a, b in zip(fp8, bf16, strict=True)) < 0.05, curves


@pytest.fixture
def one_rank_group():
    """A process group of this process alone, so that DDP and FSDP2 wrap and shard as they would on many GPUs."""
    dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1, device_id=CUDA)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("strategy", ["single", "ddp", "fsdp"])
def test_fp8_composes_with_compile_ddp_and_fsdp2(strategy, request):
    needs_fp8()
    if strategy != "single":
        request.getfixturevalue("one_rank_group")
    torch.manual_seed(0)
    raw = GPT(config()).to(CUDA)
    model = distributed.parallelize(raw, strategy, distributed.Dist(device=CUDA), "fp8", compile=True)
    curve = losses(model, raw, "fp8", strategy, updates=6)
    assert all(torch.isfinite(torch.tensor(curve))) and curve[-1] < curve[0], curve


def test_an_fp8_run_checkpoints_fp32_weights_and_resumes_in_bf16_and_back(tmp_path, data_cache):
    """fp8 for updates 0-2, bf16 for 3-4, fp8 again for 5 and the end-of-run sample: one run directory."""
    needs_fp8()
    run = tmp_path / "run"
    args = TINY + [
        "trainer.device=cuda",
        "trainer.compile=false",
        "trainer.max_steps=6",
        "trainer.ckpt_every=1",
        "trainer.keep_checkpoints=2",
    ]
    first = run_train(args + ["trainer.precision=fp8", "trainer.stop_at=3"], run, data_cache, check=False)
    assert first.returncode == 75, first.stderr[-3000:]
    assert "cuda:0, fp8, single" in first.stderr + first.stdout
    state = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    weights = [v for v in state["model"].values() if v.is_floating_point()]
    assert weights and all(v.dtype == torch.float32 for v in weights)
    second = run_train(args + ["trainer.precision=bf16", "trainer.stop_at=5"], run, data_cache, check=False)
    assert second.returncode == 75, second.stderr[-3000:]
    run_train(args + ["trainer.precision=fp8"], run, data_cache)
    records = train_records(run)
    assert sorted(records) == list(range(6))
    assert all(torch.isfinite(torch.tensor(r["train/loss"])) for r in records.values())


def plain_and_fused(**changes) -> tuple[GPT, GPT]:
    torch.manual_seed(0)
    plain = GPT(config(**changes)).to(CUDA)
    fused = GPT(config(**changes, fused_cross_entropy=True)).to(CUDA)
    fused.load_state_dict(plain.state_dict())
    return plain, fused


@pytest.mark.parametrize("softcap", [None, 15.0])
def test_fused_cross_entropy_gives_the_plain_loss_and_gradients(softcap):
    plain, fused = plain_and_fused(logit_softcap=softcap)
    x, y = (t.to(CUDA) for t in batch())
    results = []
    for model in (plain, fused):
        with distributed.autocast(CUDA, "bf16"):
            logits, loss = model(x, y)
        loss.backward()
        results.append((logits, loss, torch.cat([p.grad.flatten() for p in model.parameters()])))
    (plain_logits, plain_loss, plain_grad), (fused_logits, fused_loss, fused_grad) = results
    assert plain_logits is not None and fused_logits is None, "liger-kernel's fused loss did not run (installed?)"
    torch.testing.assert_close(fused_loss, plain_loss, rtol=1e-2, atol=1e-3)
    cosine = torch.nn.functional.cosine_similarity(fused_grad, plain_grad, dim=0)
    assert cosine > 0.999 and abs(fused_grad.norm() / plain_grad.norm() - 1) < 0.02, (cosine, fused_grad.norm())
    with torch.no_grad():  # evaluation and sampling keep the logits
        assert fused.eval()(x, y)[0] is not None


def test_fused_cross_entropy_needs_less_memory_at_a_large_vocabulary():
    c = {"vocab_size": 32768, "block_size": 512, "n_embd": 256}
    plain, fused = plain_and_fused(**c)
    x, y = (t.to(CUDA) for t in batch(rows=8, shape=config(**c)))
    peaks = []
    for model in (plain, fused):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with distributed.autocast(CUDA, "bf16"):
            _, loss = model(x, y)
        loss.backward()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - base)
        model.zero_grad(set_to_none=True)
        del loss
    plain_peak, fused_peak = peaks
    assert fused_peak < 0.6 * plain_peak, peaks
