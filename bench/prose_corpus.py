"""A local corpus of English prose, made offline, to check settings on text that is neither the built-in corpus
nor code. Two sources, one .txt file per document:

    python bench/prose_corpus.py --source man --out .cache/prose            # manual pages, ~1 MB
    python bench/prose_corpus.py --source readmes --out .cache/pkgdocs      # installed packages' READMEs
    python train.py experiment=cpu_budget data=text_files data.path=.cache/prose

``man``: this machine's manual pages (sections 1, 5, 7, 8: commands, file formats, overviews, administration),
rendered by ``man`` as plain text at an unlimited line width (one paragraph per line, no hyphenation or
justification) without indentation, taken in the order of a hash of their names (a varied selection, the same
on every run) until ``--max-bytes``. ``readmes``: the long description in each installed package's
``*.dist-info/METADATA`` (the body after the header fields), mostly Markdown prose with some code, all of them. Pages or
descriptions shorter than ``--min-chars`` (stubs, aliases) are left out. What is installed decides either corpus,
so it differs between machines.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

SECTIONS = ("1", "5", "7", "8")


def render(page: Path) -> str:
    """A manual page as plain text: one paragraph per line, without indentation or overstrike."""
    env = {**os.environ, "MANWIDTH": "10000", "MAN_KEEP_FORMATTING": "", "LC_ALL": "C.UTF-8"}
    shown = subprocess.run(["man", "-l", str(page)], capture_output=True, env=env, timeout=60)
    text = re.sub(r".\x08", "", shown.stdout.decode("utf-8", "replace"))
    lines = [re.sub(r"\s+", " ", line).strip() for line in text.splitlines()[1:-1]]  # no header and footer
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def manual_pages(man_dir: Path) -> Iterator[tuple[str, str]]:
    pages = [f for s in SECTIONS for f in sorted(man_dir.glob(f"man{s}/*")) if f.is_file()]
    for page in sorted(pages, key=lambda f: hashlib.sha1(f.name.encode()).hexdigest()):
        yield page.name.split(".gz")[0], render(page)


def package_readmes() -> Iterator[tuple[str, str]]:
    for metadata in sorted(Path(site.getsitepackages()[0]).glob("*.dist-info/METADATA")):
        yield metadata.parent.name, metadata.read_text(encoding="utf-8", errors="replace").partition("\n\n")[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", choices=("man", "readmes"), default="man", help="where the text comes from")
    p.add_argument("--out", required=True, help="folder for the .txt files (made if absent)")
    p.add_argument(
        "--max-bytes", type=int, default=None, help="stop after this many bytes (default: 1 MB of man, all readmes)"
    )
    p.add_argument("--min-chars", type=int, default=2000, help="leave out shorter documents (default 2000)")
    p.add_argument("--man-dir", type=Path, default=Path("/usr/share/man"), help="where the manual pages are")
    args = p.parse_args(argv)
    documents = manual_pages(args.man_dir) if args.source == "man" else package_readmes()
    max_bytes = args.max_bytes or (1_000_000 if args.source == "man" else float("inf"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    count = total = 0
    for name, text in documents:
        if len(text) < args.min_chars:
            continue
        (out / f"{name}.txt").write_text(text, encoding="utf-8")
        count, total = count + 1, total + len(text.encode())
        if total >= max_bytes:
            break
    if not count:
        print(
            f"error: --source {args.source} found no document of at least {args.min_chars} characters", file=sys.stderr
        )
        return 2
    print(f"{total:,} bytes of text in {count} documents under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
