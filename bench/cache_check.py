"""The token cache's check on reuse: what it costs on a config's cache and on a large synthetic token file.

    python bench/cache_check.py                  # the default corpus's cache, and a 1 GB file in the temp dir
    python bench/cache_check.py --gb 4 data=tinystories

Every reuse of a token cache compares a crc32 of each 64 MiB chunk of its token files with the ones recorded
when it was built (``data.atomic.file_checksums``, chunks in parallel threads), besides the files' sizes and the
tokenizer's hash. Reported: the whole reuse check (``data.cache.inspect``) on the config's cache, built first if
missing, and the checksums of a synthetic token file of ``--gb`` GB, written to the temporary directory and
deleted after; each the best of ``--reps``. The synthetic file is read from the page cache (just written), so
the figure is the checksum's cost, not the disk's.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the template runs from its root

import numpy as np  # noqa: E402

from data.atomic import file_checksums  # noqa: E402
from data.cache import inspect, prepare  # noqa: E402
from model.flops import cpu_name  # noqa: E402
from scheduling.spec import CommandLine, at_least  # noqa: E402
from training.config import USER_ERRORS, compose_checked  # noqa: E402


def best_seconds(work, reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def gigabytes(text: str) -> float:
    """--gb: a size the file is written in, 128 MiB at a time, up to 1 TiB."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.125 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"must be a number of GB in [0.125, 1024], got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = CommandLine(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--gb", type=gigabytes, default=1.0, help="size of the synthetic token file, in GB (2^30 bytes)")
    p.add_argument("--reps", type=at_least(1), default=3, help="timed repetitions; the best is reported")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py (e.g. data=tinystories)")
    args = p.parse_args(argv)
    try:
        cfg = compose_checked(["logger=none", *args.overrides])
        cache = prepare(cfg.data)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = sum((cache.path / f"{split}.bin").stat().st_size for split in ("train", "val"))
    seconds = best_seconds(lambda: inspect(cache.path), args.reps)
    print(f"{cache.path.name}: token files {size / 1e6:.1f} MB, reuse check {seconds * 1e3:.1f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "train.bin"
        rng = np.random.default_rng(0)
        with open(big, "wb") as fh:
            for _ in range(max(1, round(args.gb * 8))):  # 128 MiB of uint16 ids at a time
                rng.integers(0, 50304, size=64 << 20, dtype=np.uint16).tofile(fh)
        size = big.stat().st_size
        seconds = best_seconds(lambda: file_checksums(big), args.reps)
        print(
            f"synthetic {size / 2**30:.2f} GB token file: checksums {seconds:.3f} s "
            f"({size / seconds / 1e9:.2f} GB/s, {os.cpu_count()} cores of {cpu_name()})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
