"""FLOP accounting and the hardware's peak, for model FLOPs utilisation (MFU).

MFU = flops_per_token · tokens_per_sec / peak_flops, with the PaLM (appendix B) count of model FLOPs per token
``6N + 12·L·H·Q·T``: N the parameters that take part in matmuls (every parameter except the position-embedding
lookup, and except the token embedding when the output head is untied), L layers, H heads, Q head size,
T the context length. Activation recomputation is not counted (it is not model work).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from model.gpt import GPT, GPTConfig


def flops_per_token(config: GPTConfig, matmul_params: int) -> float:
    """Training FLOPs per token: 6N for the weights (forward 2N, backward 4N) + 12·L·H·Q·T for attention."""
    return 6.0 * matmul_params + 12.0 * config.n_layer * config.n_head * config.head_dim * config.block_size


def model_flops_per_token(model: GPT) -> float:
    return flops_per_token(model.config, model.num_params(exclude_embeddings=True))


# Dense (no sparsity) peak FLOP/s by device-name pattern and matmul precision, from the vendors' data sheets.
# Patterns are tried in order against torch.cuda.get_device_name(); the first match wins.
GPU_PEAKS: list[tuple[tuple[str, ...], dict[str, float]]] = [
    (("H100", "NVL"), {"bf16": 835e12, "fp16": 835e12, "tf32": 418e12, "fp32": 60e12}),
    (("H100", "PCIe"), {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51e12}),
    (("H100",), {"bf16": 989e12, "fp16": 989e12, "tf32": 495e12, "fp32": 67e12}),
    (("H200",), {"bf16": 989e12, "fp16": 989e12, "tf32": 495e12, "fp32": 67e12}),
    (("GH200",), {"bf16": 989e12, "fp16": 989e12, "tf32": 495e12, "fp32": 67e12}),
    (("B200",), {"bf16": 2250e12, "fp16": 2250e12, "tf32": 1100e12, "fp32": 75e12}),
    (("A100",), {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    (("A10G",), {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}),
    (("A10",), {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}),
    (("L40S",), {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12, "fp32": 91.6e12}),
    (("L4",), {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12}),
    (("RTX 4090",), {"bf16": 165e12, "fp16": 165e12, "tf32": 82.6e12, "fp32": 82.6e12}),
    (("RTX 3090",), {"bf16": 71e12, "fp16": 71e12, "tf32": 35.6e12, "fp32": 35.6e12}),
    (("V100",), {"fp16": 125e12, "fp32": 15.7e12}),
    (("T4",), {"fp16": 65e12, "fp32": 8.1e12}),
    (("MI300X",), {"bf16": 1307e12, "fp16": 1307e12, "tf32": 654e12, "fp32": 163e12}),
]


def gpu_peak_flops(device_name: str, precision: str, tf32: bool = True) -> float | None:
    """Peak FLOP/s of a known GPU for matmuls at ``precision`` (bf16|fp16|fp32); None when unknown."""
    key = "tf32" if precision == "fp32" and tf32 else precision
    for patterns, peaks in GPU_PEAKS:
        if all(p in device_name for p in patterns):
            return peaks.get(key)
    return None


def measure_matmul_flops(device: torch.device | str = "cpu", size: int = 1024, seconds: float = 1.0) -> float:
    """Best observed fp32 matmul FLOP/s over ``seconds`` of back-to-back (size × size) products."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b  # warm up the kernels and thread pool
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - t0))
    return best


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_peak_flops(cache_dir: str | os.PathLike | None = None) -> float:
    """The fp32 matmul peak of this CPU with torch's thread count, measured once and cached on disk."""
    cache_dir = Path(cache_dir or os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hydra-gpt-template"
    key = f"{_cpu_name()}|threads={torch.get_num_threads()}|torch={torch.__version__}"
    path = cache_dir / "cpu_peak_flops.json"
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    if key not in table:
        table[key] = max(measure_matmul_flops("cpu", size) for size in (512, 1024, 2048))
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(table, indent=1))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home only costs a re-measurement next time
    return float(table[key])


def peak_flops(device: torch.device, precision: str) -> float | None:
    """Peak FLOP/s of ``device`` at ``precision``: the GPU table on CUDA, a cached measurement on CPU."""
    if device.type == "cuda":
        tf32 = torch.backends.cuda.matmul.allow_tf32
        return gpu_peak_flops(torch.cuda.get_device_name(device), precision, tf32)
    if device.type == "cpu":
        return cpu_peak_flops()
    return None
