"""A local corpus of English prose, made offline, to check settings on text that is neither the built-in corpus
nor code. Three sources, one .txt file per document:

    python bench/prose_corpus.py --source man --out .cache/prose            # manual pages, ~1 MB
    python bench/prose_corpus.py --source readmes --out .cache/pkgdocs      # installed packages' READMEs
    python bench/prose_corpus.py --source info --out .cache/info            # GNU manuals, ~1 MB
    python train.py experiment=cpu_budget data=text_files data.path=.cache/prose

``man``: this machine's manual pages (sections 1, 5, 7, 8: commands, file formats, overviews, administration),
rendered by ``man`` as plain text at an unlimited line width (one paragraph per line, no hyphenation or
justification) without indentation, taken in the order of a hash of their names (a varied selection, the same
on every run) until ``--max-bytes``. ``readmes``: the long description in each installed package's
``*.dist-info/METADATA`` (the body after the header fields), mostly Markdown prose with some code, all of them.
``info``: the sections (nodes) of the GNU manuals in ``/usr/share/info``, book-like prose, each paragraph joined
into one line and examples kept as they are, without menus, navigation lines and the license texts many manuals
carry, in the order of a hash of manual and node until ``--max-bytes``. Pages, descriptions or sections shorter
than ``--min-chars`` (stubs, aliases) are left out. What is installed decides each corpus, so it differs between
machines.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the template's root

from scheduling.spec import CommandLine, at_least  # noqa: E402

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


def info_text(node: str) -> str:
    """One node of an info manual as plain text: no navigation line, menu or heading underline; each paragraph
    on one line; indented examples as they are."""
    blocks = []
    for block in re.split(r"\n\s*\n", node.split("\n", 2)[-1]):
        lines = [line for line in block.splitlines() if line.strip() and not re.fullmatch(r"[=*.-]+", line.strip())]
        if not lines or lines[0].startswith("* Menu:"):
            continue
        if all(line.startswith("     ") for line in lines):  # an example
            blocks.append("\n".join(line[5:] for line in lines))
        else:
            blocks.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(blocks).strip() + "\n"


LICENSES = re.compile(r"licen[cs]e|GPL|FDL|copying", re.IGNORECASE)  # the same few texts, in many manuals


def info_sections(info_dir: Path) -> Iterator[tuple[str, str]]:
    nodes = []
    for manual in sorted(info_dir.glob("*.info*.gz")):
        with gzip.open(manual, "rt", encoding="utf-8", errors="replace") as f:
            for node in f.read().split("\x1f")[1:]:
                head = node.lstrip("\n").split("\n", 1)[0]
                match = re.search(r"Node: ([^,]+)", head)
                if head.startswith("File:") and match:
                    name = f"{manual.name.split('.info')[0]}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', match[1])}"
                    nodes.append((name, node.lstrip("\n")))
    for name, node in sorted(nodes, key=lambda n: hashlib.sha1(n[0].encode()).hexdigest()):
        if not LICENSES.search(name):
            yield name, info_text(node)


def package_readmes() -> Iterator[tuple[str, str]]:
    for metadata in sorted(Path(site.getsitepackages()[0]).glob("*.dist-info/METADATA")):
        yield metadata.parent.name, metadata.read_text(encoding="utf-8", errors="replace").partition("\n\n")[2]


def main(argv: list[str] | None = None) -> int:
    p = CommandLine(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", choices=("man", "readmes", "info"), default="man", help="where the text comes from")
    p.add_argument("--out", required=True, help="folder for the .txt files (made if absent)")
    p.add_argument(
        "--max-bytes", type=at_least(1), default=None, help="stop after this many bytes (default: 1 MB; all readmes)"
    )
    p.add_argument("--min-chars", type=at_least(0), default=2000, help="leave out shorter documents (default 2000)")
    p.add_argument("--man-dir", type=Path, default=Path("/usr/share/man"), help="where the manual pages are")
    p.add_argument("--info-dir", type=Path, default=Path("/usr/share/info"), help="where the GNU manuals are")
    args = p.parse_args(argv)
    documents = {
        "man": lambda: manual_pages(args.man_dir),
        "readmes": package_readmes,
        "info": lambda: info_sections(args.info_dir),
    }[args.source]()
    max_bytes = args.max_bytes or (float("inf") if args.source == "readmes" else 1_000_000)
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
