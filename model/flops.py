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
import re
import time
from pathlib import Path

import torch

from model.gpt import GPT, GPTConfig


def flops_per_token(config: GPTConfig, matmul_params: int) -> float:
    """Training FLOPs per token: 6N for the weights (forward 2N, backward 4N) + 12·L·H·Q·T for attention."""
    return 6.0 * matmul_params + 12.0 * config.n_layer * config.n_head * config.head_dim * config.block_size


def model_flops_per_token(model: GPT) -> float:
    return flops_per_token(model.config, model.num_params(exclude_embeddings=True))


# Dense (no sparsity) peak FLOP/s per GPU by matmul precision, from the vendors' data sheets. "tf32" is the
# tensor-core rate fp32 matmuls get with TF32 allowed, "fp32" the plain rate. The sheets print the tensor
# rates with sparsity (twice the dense rate) next to the dense ones; these are the dense ones. Sources:
#   NVIDIA data sheets: A100 (SXM4 and PCIe alike), H100 (SXM5, PCIe, NVL), H200 (SXM, NVL), GH200, L40S,
#   L4, A10, A40, V100 (SXM2, PCIe, V100S), T4; the Blackwell data sheet for B200 (bf16/fp16 only);
#   NVIDIA's Ampere GA102 and Ada Lovelace whitepapers for the GeForce RTX 3090 and 4090 (tensor rates with
#   fp32 accumulation, which is what PyTorch uses); AMD's Instinct MI300X data sheet.
# Unlisted devices (and the A10G, whose figures NVIDIA does not publish) get no MFU rather than a guess.
# Patterns are regular expressions tried in order against torch.cuda.get_device_name(); the first match wins.
GPU_PEAKS: list[tuple[str, dict[str, float]]] = [
    (r"\bH100\b.*\bNVL\b", {"bf16": 835.5e12, "fp16": 835.5e12, "tf32": 417.5e12, "fp32": 60e12}),
    (r"\bH100\b.*\bPCIe\b", {"bf16": 756.5e12, "fp16": 756.5e12, "tf32": 378e12, "fp32": 51e12}),
    (r"\bH100\b", {"bf16": 989.5e12, "fp16": 989.5e12, "tf32": 494.5e12, "fp32": 67e12}),
    (r"\bGH200\b", {"bf16": 989.5e12, "fp16": 989.5e12, "tf32": 494.5e12, "fp32": 67e12}),
    (r"\bH200\b.*\bNVL\b", {"bf16": 835.5e12, "fp16": 835.5e12, "tf32": 417.5e12, "fp32": 60e12}),
    (r"\bH200\b", {"bf16": 989.5e12, "fp16": 989.5e12, "tf32": 494.5e12, "fp32": 67e12}),
    (r"\bB200\b", {"bf16": 2250e12, "fp16": 2250e12}),
    (r"\bA100\b", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    (r"\bA40\b", {"bf16": 149.7e12, "fp16": 149.7e12, "tf32": 74.8e12, "fp32": 37.4e12}),
    (r"\bA10\b", {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}),
    (r"\bL40S\b", {"bf16": 362.05e12, "fp16": 362.05e12, "tf32": 183e12, "fp32": 91.6e12}),
    (r"\bL4\b", {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12}),
    (r"\bRTX 4090\b(?! D)", {"bf16": 165.2e12, "fp16": 165.2e12, "tf32": 82.6e12, "fp32": 82.6e12}),
    (r"\bRTX 3090\b(?! Ti)", {"bf16": 71e12, "fp16": 71e12, "tf32": 35.6e12, "fp32": 35.6e12}),
    (r"\bV100S\b", {"fp16": 130e12, "fp32": 16.4e12}),
    (r"\bV100\b.*\bPCIE\b", {"fp16": 112e12, "fp32": 14e12}),
    (r"\bV100\b", {"fp16": 125e12, "fp32": 15.7e12}),
    (r"\bT4\b", {"fp16": 65e12, "fp32": 8.1e12}),
    (r"\bMI300X\b", {"bf16": 1307.4e12, "fp16": 1307.4e12, "tf32": 653.7e12, "fp32": 163.4e12}),
]


def gpu_peak_flops(device_name: str, precision: str, tf32: bool = True) -> float | None:
    """Peak FLOP/s of a known GPU for matmuls at ``precision`` (bf16|fp16|fp32); None when unknown.

    fp32 with ``tf32`` allowed counts at the TF32 tensor-core rate where the GPU has one.
    """
    for pattern, peaks in GPU_PEAKS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            if precision == "fp32" and tf32 and "tf32" in peaks:
                return peaks["tf32"]
            return peaks.get(precision)
    return None


def measure_matmul_flops(
    device: torch.device | str = "cpu",
    sizes: tuple[int, ...] = (512, 1024, 1536, 2048),
    seconds: float = 0.5,
    dtype: torch.dtype = torch.float32,
) -> float:
    """The best sustained matmul rate torch reaches here at ``dtype``, in FLOP/s, with torch's current thread
    count (and, on CUDA, its current TF32 setting for fp32).

    For each size n, square products (n × n)·(n × n) = 2n³ FLOPs run back to back into a preallocated output
    (so allocation and page faults are not timed) for ``seconds``, timed in windows of at least 50 ms; the
    rate is the best window over all sizes. The best rather than the mean, because on a shared machine other
    work only ever slows a window down: the fastest one is the closest to what the hardware does.
    """
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = 0.0
    generator = torch.Generator(device).manual_seed(0)  # its own: a run's dropout draws from the global one
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
        out = torch.empty(n, n, device=device, dtype=dtype)
        torch.mm(a, b, out=out)  # warm up the kernels and the thread pool
        sync()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            calls, t0 = 0, time.perf_counter()
            while True:
                torch.mm(a, b, out=out)
                calls += 1
                sync()
                elapsed = time.perf_counter() - t0
                if elapsed >= 0.05:
                    break
            best = max(best, calls * 2 * n**3 / elapsed)
    return best


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_peak_flops(
    cache_dir: str | os.PathLike | None = None, refresh: bool = False, dtype: torch.dtype = torch.float32
) -> float:
    """The ``dtype`` matmul peak of this CPU with torch's thread count (``measure_matmul_flops``), cached on disk
    under ``$XDG_CACHE_HOME/hydra-gpt-template`` and keyed by CPU model, thread count, torch version and dtype.

    The cache keeps the highest measurement seen for its key: other work on the machine only ever slows a
    measurement down, and a low peak would inflate every MFU that uses it. ``refresh`` measures again and keeps
    the higher of the two; the stored value is returned.
    """
    cache_dir = Path(cache_dir or os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hydra-gpt-template"
    key = f"{cpu_name()}|threads={torch.get_num_threads()}|torch={torch.__version__}"
    key += "" if dtype == torch.float32 else f"|{str(dtype).removeprefix('torch.')}"
    path = cache_dir / "cpu_peak_flops.json"
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    if not isinstance(table, dict):
        table = {}
    stored = table.get(key)
    if not isinstance(stored, (int, float)) or isinstance(stored, bool) or not stored > 0:
        stored = None
    if refresh or stored is None:
        measured = measure_matmul_flops("cpu", dtype=dtype)
        if stored is None or measured > stored:
            table[key] = measured
            try:
                cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps(table, indent=1))
                os.replace(tmp, path)
            except OSError:
                pass  # a read-only cache only costs a measurement next time
        stored = max(measured, stored or 0.0)
    return float(stored)


def peak_flops(device: torch.device, precision: str, refresh: bool = False) -> float | None:
    """Peak FLOP/s of ``device`` at ``precision``: the GPU table on CUDA, a cached measurement on CPU (for a bf16
    run, the better of the bf16 and fp32 matmul rates; ``refresh``: measured again, the higher kept). fp8 runs
    count against the bf16 peak (only the blocks' linear layers run in fp8), so their MFU compares with bf16's."""
    if device.type == "cuda":
        precision = "bf16" if precision == "fp8" else precision
        # ROCm builds run fp32 matmuls at the fp32 rate whatever allow_tf32 says.
        tf32 = torch.backends.cuda.matmul.allow_tf32 and torch.version.hip is None
        return gpu_peak_flops(torch.cuda.get_device_name(device), precision, tf32)
    if device.type == "cpu":
        # bf16 against the better rate: bf16's where the CPU has its instructions, fp32's where they are emulated
        fp32 = cpu_peak_flops(refresh=refresh)
        return max(fp32, cpu_peak_flops(refresh=refresh, dtype=torch.bfloat16)) if precision == "bf16" else fp32
    return None
