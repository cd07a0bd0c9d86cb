"""A local corpus of English prose, offline: the README of every installed Python package, one file each.

    python bench/package_readmes.py --out .cache/pkgdocs
    python train.py data=text_files data.path=.cache/pkgdocs

A package's README is the long description in its ``*.dist-info/METADATA`` (the body after the header fields):
mostly Markdown prose, with some code. Descriptions shorter than ``--min-chars`` (stubs) are left out. Which
packages are installed decides the corpus, so it differs between machines.
"""

from __future__ import annotations

import argparse
import site
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the .txt files (made if absent)")
    p.add_argument("--min-chars", type=int, default=2000, help="leave out shorter descriptions (default 2000)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for metadata in sorted(Path(site.getsitepackages()[0]).glob("*.dist-info/METADATA")):
        body = metadata.read_text(encoding="utf-8", errors="replace").partition("\n\n")[2]
        if len(body) > args.min_chars:
            (out / f"{metadata.parent.name}.txt").write_text(body, encoding="utf-8")
            written += 1
    print(f"{written} package READMEs under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
