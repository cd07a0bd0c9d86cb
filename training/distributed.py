"""Where and how the model runs: the process group, the device, precision and compilation, and the data-parallel
wrapping (DDP, or FSDP2 for models that don't fit one device).

A single process (no ``WORLD_SIZE`` in the environment, or 1) needs no process group. Under torchrun each
rank joins the group torchrun describes (NCCL on CUDA, gloo on CPU), takes the GPU of its local rank, and
only rank 0 writes files. Strategies (``trainer.strategy``):
- ``single``: one process; ``ddp``: a full replica per rank, gradients all-reduced (the default when
  WORLD_SIZE > 1); ``fsdp``: every block sharded across ranks (``fully_shard`` per block, then the root), bf16
  parameters with fp32 gradient reduction on GPU.

The ranks wait ``trainer.collective_timeout`` for each other to join the group (``init``). A collective waits
for the other ranks ``PREPARE_TIMEOUT_S`` while rank 0 builds the token cache (``in_turn``),
``SETUP_TIMEOUT_S`` while the rest of the run starts (every rank compiles) and ends (rank 0 alone samples and
reports), and ``trainer.collective_timeout`` in between (``set_collective_timeout``, after the first update, as
torchtitan does): a rank that stopped answering then ends the others' wait with a backend error
(``peer_failure``). Under NCCL its asynchronous error handling does it: a timed-out collective is aborted and the
process torn down.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from training.config import DEVICES, PRECISIONS, STRATEGIES, USER_ERRORS, ConfigError
from training.signals import stop_even_while_blocked

log = logging.getLogger("train")

SETUP_TIMEOUT_S = 1800.0  # a collective's wait at the start and the end of a run, when one rank may work alone
PREPARE_TIMEOUT_S = 7 * 24 * 3600.0  # while rank 0 builds the token cache alone: a large corpus takes hours


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def is_initialized() -> bool:
    """Whether this process is one rank of a process group (under torchrun)."""
    return dist.is_available() and dist.is_initialized()


def env_world() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(choice: str, local_rank: int = 0, key: str = "trainer.device") -> torch.device:
    """``trainer.device`` (or ``key``): auto picks cuda, then mps, then cpu; an explicit choice must exist here."""
    if choice not in DEVICES:
        raise ConfigError(key, f"one of {', '.join(DEVICES)}", choice)
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(key, "auto or cpu on this machine (torch sees no CUDA GPU)", "cuda")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"{key}: local rank {local_rank} has no GPU (this node has {torch.cuda.device_count()})")
        return torch.device("cuda", local_rank)
    if choice == "mps" and not mps_available():
        raise ConfigError(key, "auto or cpu on this machine (torch sees no MPS device)", "mps")
    return torch.device(choice)


def resolve_precision(
    choice: str, device: torch.device, key: str = "trainer.precision", allowed: tuple[str, ...] = PRECISIONS
) -> str:
    """``trainer.precision`` (or ``key``, one of ``allowed``): auto is bf16 on CUDA GPUs that support it, fp16 on
    older ones, else fp32; fp8 only where :func:`check_fp8` allows it."""
    if choice not in allowed:
        raise ConfigError(key, f"one of {', '.join(allowed)}", choice)
    cuda = device.type == "cuda"
    if choice == "auto":
        if cuda:
            return "bf16" if cuda_has_bf16() else "fp16"
        return "fp32"
    if choice == "bf16" and cuda and not cuda_has_bf16():
        name = torch.cuda.get_device_name(device)
        if not torch.cuda.is_bf16_supported(including_emulation=True):
            raise ConfigError(key, f"fp16 or fp32 on {name} (it has no bf16 support)", "bf16")
        log.warning(f"{key}=bf16: emulated on {name} (no bf16 arithmetic): slow, slower than its fp16")
    if choice == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        log.warning(f"{key}=bf16: emulated on this CPU (no bf16 instructions): slow, slower than fp32 here")
    if choice == "fp16" and device.type == "cpu":
        raise ConfigError(key, "fp32 or bf16 on the CPU (fp16 needs a GPU)", "fp16")
    if choice == "fp8":
        check_fp8(device, key)
    return choice


FP8_CAPABILITY = (8, 9)  # Ada and Hopper onwards: the first GPUs with fp8 tensor cores


def check_fp8(device: torch.device, key: str = "trainer.precision") -> None:
    """``trainer.precision=fp8`` needs a CUDA GPU with fp8 tensor cores and torchao; refused in one line elsewhere."""
    if device.type != "cuda":
        where = device.type.upper()
        raise ConfigError(
            key,
            f"fp32 or bf16 on the {where} (fp8 needs a CUDA GPU of compute capability 8.9 or newer)",
            "fp8",
        )
    if torch.cuda.get_device_capability(device) < FP8_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        raise ConfigError(
            key,
            f"bf16, fp16 or fp32 on {name} (fp8 needs compute capability 8.9 or newer: Ada, Hopper, Blackwell)",
            "fp8",
        )
    if importlib.util.find_spec("torchao") is None:
        raise ConfigError(
            f"{key}=fp8 needs torchao's float8 training: pip install torchao (or the project's gpu extra)"
        )


def float8_linears(model: torch.nn.Module) -> torch.nn.Module:
    """``trainer.precision=fp8``: each linear layer of the blocks becomes torchao's Float8Linear, in place; its
    matmuls run in fp8 with dynamic per-tensor scales (forward e4m3, gradients e5m2), everything else in bf16
    autocast. The output head stays bf16 (it feeds the loss). Weights stay fp32 parameters under their own names,
    so state dicts and checkpoints are those of a bf16 run, and a run can resume in either precision."""
    from model.hf import quiet_imports

    with quiet_imports():
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    def in_blocks(module: torch.nn.Module, fqn: str) -> bool:  # fp8 matmuls take dimensions divisible by 16
        return fqn.startswith("blocks.") and module.in_features % 16 == 0 and module.out_features % 16 == 0

    return convert_to_float8_training(model, config=Float8LinearConfig(), module_filter_fn=in_blocks)


# oneDNN's instruction sets without bf16 arithmetic: with ONEDNN_MAX_CPU_ISA capped at one, bf16 matmuls are emulated
ONEDNN_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_flags() -> str:
    """The CPU's feature flags from /proc/cpuinfo ('' where it can't be read)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively: it has bf16 instructions (AVX512-BF16 or AMX) and oneDNN, which
    runs torch's CPU bf16 matmuls, is not capped below them (``ONEDNN_MAX_CPU_ISA``, or its older name
    ``DNNL_MAX_CPU_ISA``). Without them bf16 math is emulated, several times slower than fp32. Where the flags
    can't be read (macOS, Windows), assume it has not: fp32 is never the slow choice."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA", "")  # the newer name wins
    if cap.upper() in ONEDNN_WITHOUT_BF16:
        return False
    flags = cpu_flags()
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def cuda_has_bf16() -> bool:
    """Whether this CUDA GPU computes in bf16 natively (Ampere on); torch's own answer counts an older GPU that only
    emulates it (V100, T4), slower than its fp16."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_compile(choice, device: torch.device) -> bool:
    """``trainer.compile``: auto compiles on CUDA only; true and false force it."""
    return device.type == "cuda" if choice == "auto" else bool(choice)


def resolve_strategy(choice: str, world_size: int) -> str:
    if choice not in STRATEGIES:
        raise ConfigError("trainer.strategy", f"one of {', '.join(STRATEGIES)}", choice)
    if choice == "auto":
        return "ddp" if world_size > 1 else "single"
    if choice in ("ddp", "fsdp") and world_size == 1:
        return "single"  # one process: nothing to shard or all-reduce
    if choice == "single" and world_size > 1:
        raise ConfigError("trainer.strategy", f"ddp or fsdp under torchrun (WORLD_SIZE={world_size})", choice)
    return choice


def parallelize(model: torch.nn.Module, strategy: str, d: Dist, precision: str, compile: bool) -> torch.nn.Module:
    """The module the loop calls: fp8 linear layers swapped in and compiled in place (state-dict keys unchanged),
    then wrapped or sharded."""
    if precision == "fp8":
        float8_linears(model)
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy()
        if d.device.type == "cuda" and precision in ("bf16", "fp16", "fp8"):
            low = torch.float16 if precision == "fp16" else torch.bfloat16
            policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
        for block in model.blocks:
            if compile:
                block.compile()
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    if compile:
        model.compile()
    if strategy == "ddp":
        device_ids = [d.device.index] if d.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return model


def autocast_needed(strategy: str, device: torch.device) -> bool:
    """FSDP's mixed-precision policy casts parameters itself on GPU; everything else uses autocast."""
    return not (strategy == "fsdp" and device.type == "cuda")


def allow_tf32(device: torch.device) -> None:
    """TF32 matmuls and convolutions on CUDA (Ampere and newer): fp32 work at tensor-core speed."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def keep_freed_memory(device: torch.device) -> bool:
    """On a CPU device, have glibc's malloc keep the memory an update frees for the next one; True if it took.

    An update allocates its activations and gradients and frees them at its end. By default glibc hands the
    freed top of the heap back to the kernel, so every update faults in fresh zeroed pages again; keeping them
    (blocks under 32 MiB come from the heap, trimmed only past 2 GiB free) saves that kernel time, and the
    process keeps its peak memory. Where the allocator is not glibc's nothing changes."""
    if device.type != "cpu":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def autocast(device: torch.device, precision: str):
    """The mixed-precision context of the forward pass (a no-op for fp32; bf16 for fp8, whose linear layers cast
    to fp8 themselves)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def init(device_choice: str, join_timeout: float = SETUP_TIMEOUT_S) -> Dist:
    """Join torchrun's process group when there is one, and pick this rank's device. Every rank must join within
    ``join_timeout`` seconds (``trainer.collective_timeout``): a rank that never starts (srun starts each on its
    own; rank 0 may have refused to) ends the others' wait with ``PeerLost``, not the start's 30 minutes."""
    rank, local_rank, world_size = env_world()
    device = resolve_device(device_choice, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        if backend == "nccl":  # a collective past its timeout is aborted and the process torn down, not left waiting
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        try:
            with stop_even_while_blocked("the ranks joined"):
                dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=join_timeout), **kwargs)
        except dist.DistError as e:
            if "timed out" not in str(e).lower():  # a port in use, an address that does not resolve: torch's own
                raise
            from training.watchdog import PeerLost  # it imports this module

            raise PeerLost(None, join_timeout, peer_failure(e) or type(e).__name__) from None
        set_collective_timeout(SETUP_TIMEOUT_S)
    return Dist(rank, local_rank, world_size, device)


def set_collective_timeout(seconds: float) -> None:
    """From now on a collective waits at most ``seconds`` for the other ranks (once the process group exists)."""
    if is_initialized():
        from torch.distributed.distributed_c10d import _set_pg_timeout

        _set_pg_timeout(datetime.timedelta(seconds=seconds))


def peer_failure(error: BaseException) -> str | None:
    """What the backend said when a collective failed because another rank stopped answering or left — gloo's
    timeout or closed connection, NCCL's error — in a few words; None for any other error."""
    text = str(error).strip()
    if not isinstance(error, dist.DistError) and not (isinstance(error, RuntimeError) and "gloo/transport" in text):
        return None
    first = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0] if text else type(error).__name__)  # [file.cc:53]
    return first.split(". ")[0].rstrip(".")[:200]


FAILED_KEY = "failed/rank-"  # + the rank: in the process group's store, what that rank failed with


def announce_failure(message: str, code: int) -> None:
    """This rank fails with the one line ``message`` (exit ``code``): leave it in the process group's store, then
    leave the group at once, so that the others stop with this line (``announced_failure``) as soon as their
    collective sees this rank gone, not after its ending (its trackers closing) as for a peer that stopped
    answering. torchrun's store is its launcher's, which outlives the ranks; where the store is gone the others
    report a peer that stopped answering."""
    if not is_initialized():
        return
    with contextlib.suppress(Exception):
        dist.distributed_c10d._get_default_store().set(f"{FAILED_KEY}{dist.get_rank()}", f"{code} {message}")
    with contextlib.suppress(Exception):
        dist.destroy_process_group()


def announced_failure() -> tuple[str, int] | None:
    """The line and exit code another rank left in the store as it failed (the lowest such rank's), if any."""
    if not is_initialized():
        return None
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set_timeout(datetime.timedelta(seconds=5))  # a store that is gone: an error, not a wait
        for rank in range(dist.get_world_size()):
            key = f"{FAILED_KEY}{rank}"
            if rank != dist.get_rank() and store.check([key]):
                code, _, message = store.get(key).decode().partition(" ")
                return message, int(code)
    except Exception:  # the store went with the rank that held it (not under torchrun): nothing to read
        return None
    return None


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` as rank ``src`` has it, on every rank (itself when not distributed)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def from_rank_zero(work, d: Dist):
    """``work()`` on rank 0 (what only it may read or decide), its result on every rank; its bad-input error is
    raised on every rank as the same one line (the others would wait in the broadcast, then fail with gloo's
    "connection closed" when rank 0 left)."""
    result, error = None, None
    if d.is_main:
        try:
            result = work()
        except USER_ERRORS as e:
            if not d.distributed:
                raise
            error = e
    result, message = broadcast_object((result, None if error is None else str(error)))
    if error is not None:
        raise error
    if message is not None:
        raise ConfigError(message)
    return result


def shutdown(wait: bool = False) -> None:
    """Tear down the process group; ``wait``: once every rank has got here, so that none closes its connections
    while another still writes its end-of-run reports (gloo can abort the rank that left first)."""
    if is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def gather_object(obj) -> list:
    """``obj`` of every rank, in rank order, on every rank (``[obj]`` when not distributed)."""
    if not is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (one tiny all-reduce when distributed)."""
    if not is_initialized():
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def check_same_everywhere(**values) -> None:
    """Raise if any rank disagrees on ``values`` (the update index, the lr, the schedule's index): a cheap guard,
    run at each evaluation, that every rank steps its scheduler exactly once per update."""
    if not is_initialized():
        return
    everywhere = gather_object(values)
    if any(v != everywhere[0] for v in everywhere):
        raise RuntimeError(f"ranks disagree on {sorted(values)}: {everywhere}")


def in_turn(work, d: Dist):
    """Run ``work()`` on every rank, rank 0 first, then the first rank of each other node, then the rest: a
    cache that rank 0 builds is found by the others (on a shared filesystem), or built once per node.

    An error on any rank stops every rank with the same one line, instead of leaving them at a barrier."""

    def phase(here: bool):
        result, error = None, None
        if here:
            try:
                result = work()
            except USER_ERRORS as e:
                error = str(e)
            except Exception as e:
                if not d.distributed:
                    raise
                error = f"rank {d.rank}: {type(e).__name__}: {e}"
        errors = gather_object(error)
        first = next((e for e in errors if e), None)
        if first is not None:
            raise ConfigError(first)
        return result

    set_collective_timeout(PREPARE_TIMEOUT_S)  # the others wait as long as the work takes (a rank that dies ends it)
    try:
        result = phase(d.is_main)
        local = phase(not d.is_main and d.local_rank == 0)
        rest = phase(d.local_rank != 0)
    finally:
        set_collective_timeout(SETUP_TIMEOUT_S)
    return result if d.is_main else local if d.local_rank == 0 else rest
