"""Multiple-choice evaluations on the eval plug point (``training.evaluation``), scored as lm-evaluation-harness
scores them, so the numbers logged during training are the numbers a user would get from lm-eval afterwards.

For each item the model scores each choice's continuation given the context: the summed log-likelihood of the
continuation's tokens. ``acc`` is the share of items whose right choice has the largest sum; ``acc_norm`` divides
each sum by the length of the choice's text (its characters, lm-eval's ``acc_norm``; bytes for ASCII text) first,
so longer choices are not penalised for their length. A context and continuation are encoded as lm-eval's
``_encode_pair`` does (trailing whitespace moves to the continuation; the whole is encoded and split at the
context's length), and a pair longer than the model's context loses its oldest tokens (lm-eval's truncation).

Three tasks, each an ``eval`` option (``conf/eval/<name>.yaml``), logged as ``eval/<name>/acc`` and
``eval/<name>/acc_norm``:

- ``next_line``: made offline from the run's own validation documents — a few lines of one, and its true next line
  among lines drawn from other validation documents; the same items at every evaluation and across resumes.
- ``multiple_choice``: a local JSONL file, one item per line: ``{"context": str, "choices": [str, …], "label": int}``.
- ``hellaswag``: HellaSwag's validation split from the hub (``Rowan/hellaswag``) or a local copy, preprocessed as
  lm-eval's ``hellaswag`` task.

Items are scored in batches of ``batch_size`` items (each item's choices in the same batch). Under DDP or FSDP the
batches are dealt to the ranks and the counts summed, so the result is a single process's, bit for bit.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from data import DataError, MixtureValBatches
from data.cache import special_tokens
from data.tokenizer import eot_id
from scheduling.spec import first_line
from training.config import ConfigError, is_int, positive_int
from training.distributed import is_initialized
from training.engine import to_device
from training.evaluation import EvalContext, sum_dtype

log = logging.getLogger("train")

IGNORE = -100  # cross_entropy's ignore_index: a target that adds no loss


@dataclass(frozen=True)
class Item:
    context: str
    choices: tuple[str, ...]
    label: int
    where: str = field(default="", compare=False)  # "file:line" of a read item, for its errors


def encode_pair(tokenizer, context: str, continuation: str, eot_id: int) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval encodes a pair for a causal model: trailing whitespace of the
    context moves to the continuation; the context is encoded alone, the continuation is what follows as many
    tokens in the whole's encoding (the two differ where the context's end merges into the continuation); an
    empty (or blank) context is the end-of-text token."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        return [eot_id], tokenizer.encode(continuation, add_special_tokens=False).ids
    whole = tokenizer.encode(context + continuation, add_special_tokens=False).ids
    alone = tokenizer.encode(context, add_special_tokens=False).ids
    return alone, whole[len(alone) :]


def choice_scores(
    model: torch.nn.Module, pairs: list[tuple[list[int], list[int]]], block_size: int, *, device, autocast
):
    """The summed log-likelihood of each pair's continuation given its context, in one forward pass: each pair is
    cut to its last ``block_size + 1`` tokens, and right-padded (a causal model's earlier positions never see the
    padding)."""
    rows = [(ctx + cont)[-(block_size + 1) :] for ctx, cont in pairs]
    width = max(len(r) for r in rows) - 1
    x = torch.zeros(len(rows), width, dtype=torch.long)
    y = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (row, (_, cont)) in enumerate(zip(rows, pairs, strict=True)):
        n = len(row) - 1
        x[i, :n] = torch.tensor(row[:-1])
        y[i, n - len(cont) : n] = torch.tensor(row[-len(cont) :])  # only the continuation's tokens are scored
    x, y = to_device(x, device), to_device(y, device)
    with autocast:
        _, loss = model(x, y, reduction="none")
    return -loss.to(sum_dtype(loss.device)).view(len(rows), width).sum(dim=1)  # ignored targets add 0


class ChoiceTask:
    """A multiple-choice evaluation over ``items``: ``eval/<name>/acc`` and ``eval/<name>/acc_norm``. A choice is
    scored as the continuation ``delimiter + choice``; ``acc_norm`` divides by the choice's own length."""

    def __init__(
        self,
        ctx: EvalContext,
        items: Sequence[Item],
        *,
        batch_size: int,
        delimiter: str,
        where: str,
        leave_out_unfit: bool = False,
    ):
        self.ctx, self.items, self.batch_size = ctx, [], batch_size
        tokenizer, self.block_size = ctx.tokenizer, int(ctx.cfg.model.block_size)
        separator = eot_id(tokenizer, special_tokens(ctx.cfg.data))
        self.pairs = []  # per item: each choice's (context ids, continuation ids)
        for n, item in enumerate(items):
            pairs = [encode_pair(tokenizer, item.context, delimiter + choice, separator) for choice in item.choices]
            lengths = [len(cont) for _, cont in pairs]
            if max(lengths) > self.block_size or min(lengths) == 0:  # a long context is cut from the left, not a choice
                if leave_out_unfit:  # an item made here, not given: asked about no more
                    continue
                what = (
                    "no tokens"
                    if min(lengths) == 0
                    else f"{max(lengths)} tokens, more than model.block_size={self.block_size}"
                )
                raise DataError(f"{item.where or f'{where}: item {n + 1}'}: a choice of {what}")
            self.items.append(item)
            self.pairs.append(pairs)
        if len(self.items) < len(items):
            log.info(
                "%s: %d of %d items left out: a choice does not fit model.block_size=%d once encoded after its context",
                where,
                len(items) - len(self.items),
                len(items),
                self.block_size,
            )
        # longest first, as lm-eval orders its requests: a batch's rows have similar lengths, so little padding
        self.order = sorted(range(len(self.items)), key=lambda i: -max(len(c) + len(t) for c, t in self.pairs[i]))
        self.prefix = f"eval/{ctx.name}"

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        if not self.items:
            return {}
        c, n_batches = self.ctx, math.ceil(len(self.items) / self.batch_size)
        world, rank = c.dist.world_size, c.dist.rank
        counts = torch.zeros(3, dtype=sum_dtype(c.device))  # right by acc, right by acc_norm, items
        was_training = model.training
        model.eval()
        # every rank makes as many forward passes (FSDP gathers the weights in each): a rank short of a batch
        # scores the first one again and counts nothing
        for i in range(math.ceil(n_batches / world)):
            b = i * world + rank
            for item, lls in self.loglikelihoods(model, b if b < n_batches else 0):
                counts += torch.tensor([*self.right(item, lls), 1.0]) * (b < n_batches)
        model.train(was_training)
        counts = counts.to(c.device)
        if is_initialized():
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        acc, acc_norm, n = counts.tolist()
        return {f"{self.prefix}/acc": acc / n, f"{self.prefix}/acc_norm": acc_norm / n}

    @torch.no_grad()
    def loglikelihoods(self, model: torch.nn.Module, b: int) -> list[tuple[Item, np.ndarray]]:
        """Batch ``b``'s items, each with its choices' summed log-likelihoods (the model in eval mode)."""
        items = self.order[b * self.batch_size : (b + 1) * self.batch_size]
        pairs = [pair for i in items for pair in self.pairs[i]]
        scores = choice_scores(model, pairs, self.block_size, device=self.ctx.device, autocast=self.ctx.autocast)
        scores, start, out = scores.cpu().numpy(), 0, []
        for i in items:
            n = len(self.items[i].choices)
            out.append((self.items[i], scores[start : start + n]))
            start += n
        return out

    @staticmethod
    def right(item: Item, lls: np.ndarray) -> tuple[bool, bool]:
        """(acc, acc_norm) of one item: its label has the largest log-likelihood, in total / per character."""
        lengths = np.array([float(len(choice)) for choice in item.choices])
        return bool(lls.argmax() == item.label), bool((lls / lengths).argmax() == item.label)


def check_limit(keys: dict[str, Any], where: str) -> None:
    """``limit``: the first N items, or null for every item."""
    limit = keys.get("limit")
    if limit is not None and (not is_int(limit) or limit < 1):
        raise ConfigError(f"{where}.limit", "an integer > 0 or null (all)", limit)


class MultipleChoice(ChoiceTask):
    """A local JSONL file of items, one per line: ``{"context": str, "choices": [str, ...], "label": int}``; each
    choice is scored as the continuation ``target_delimiter + choice``."""

    def __init__(
        self,
        ctx: EvalContext,
        path: str | None,
        limit: int | None,
        batch_size: int,
        target_delimiter: str,
    ):
        where = f"eval.evals.{ctx.name}"
        self.check_settings(
            {"path": path, "limit": limit, "batch_size": batch_size, "target_delimiter": target_delimiter}, where
        )
        items = read_items(path)[:limit]
        super().__init__(ctx, items, batch_size=batch_size, delimiter=target_delimiter, where=where)

    @classmethod
    def check(cls, keys: dict[str, Any], where: str) -> None:
        cls.check_settings(keys, where)
        read_items(keys["path"])  # every line, before any work (the file is small; preparing the data may take hours)

    @classmethod
    def check_settings(cls, keys: dict[str, Any], where: str) -> None:
        path = keys.get("path")
        if not path:
            raise ConfigError(f"{where}.path", "a JSONL file of {context, choices, label} items", path)
        if not Path(str(path)).is_file():
            raise ConfigError(f"{where}.path: {path} is not a file")
        if not isinstance(keys.get("target_delimiter"), str):
            raise ConfigError(
                f"{where}.target_delimiter", "a string put between context and choice", keys.get("target_delimiter")
            )
        check_limit(keys, where)
        positive_int(keys, "batch_size", where)


def read_items(path: str | Path) -> list[Item]:
    """The items file's items; none is an error naming it."""
    items = read_jsonl(Path(path))
    if not items:
        raise DataError(f"{path}: no items")
    return items


def read_jsonl(path: Path) -> list[Item]:
    """The items of a JSONL file; a line that is not one is a one-line error naming the file and the line."""
    return [item_of(row, where) for where, row in jsonl_rows(path)]


def jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """Each JSON value of a JSONL file, with ``file:line``; a line that is not one is an error naming it."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{where}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not a JSON object ({e.msg})") from None
            except RecursionError:
                raise DataError(f"{where}: not a JSON object (nested too deeply)") from None
            except ValueError as e:  # an integer past Python's limit on digits
                raise DataError(f"{where}: not a JSON object ({first_line(e)})") from None


def is_text(value: Any) -> bool:
    """A string the tokenizer takes: JSON's escapes can spell a lone surrogate, which is no text."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def item_of(row: Any, where: str, choices_key: str = "choices") -> Item:
    """An item from ``row``; ``choices_key``: what the file calls the choices (HellaSwag: endings), for the message."""
    if not isinstance(row, dict) or not {"context", "choices", "label"} <= row.keys():
        raise DataError(f"{where}: an item needs the keys context, choices and label")
    context, choices, label = row["context"], row["choices"], row["label"]
    if not is_text(context):
        raise DataError(f"{where}: context must be a string")
    if not isinstance(choices, list) or len(choices) < 2 or not all(is_text(c) and c for c in choices):
        raise DataError(f"{where}: {choices_key} must be a list of two or more non-empty strings")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise DataError(f"{where}: label must be an index into {choices_key}, 0 to {len(choices) - 1}, got {label!r}")
    return Item(context, tuple(choices), label, where)


class NextLine(ChoiceTask):
    """Made offline from the run's validation documents: ``context_lines`` lines of one document, and its true next
    line among ``choices - 1`` lines drawn from other validation documents. A line is asked about when it has at
    least 8 characters besides whitespace and fits the model's context; ``limit`` items are drawn by ``seed``, its
    own (not ``trainer.seed``): every evaluation, every resume and every run on the same validation text asks the
    same ones, so runs that differ in trainer.seed are compared on the same questions."""

    def __init__(
        self, ctx: EvalContext, limit: int | None, choices: int, context_lines: int, batch_size: int, seed: int = 1337
    ):
        where = f"eval.evals.{ctx.name}"
        keys = {"limit": limit, "choices": choices, "context_lines": context_lines, "batch_size": batch_size}
        self.check({**keys, "seed": seed}, where)
        documents = validation_documents(ctx.val_batches, ctx.tokenizer, special_tokens(ctx.cfg.data)[0])
        items = next_line_items(
            documents,
            limit=limit,
            choices=choices,
            context_lines=context_lines,
            max_bytes=int(ctx.cfg.model.block_size) - 1,
            seed=seed,
        )
        # a line that fits alone may not once encoded after its context (the context's trailing blank lines move
        # into it, as lm-eval moves trailing whitespace): such an item is left out, not refused
        super().__init__(ctx, items, batch_size=batch_size, delimiter="\n", where=where, leave_out_unfit=True)
        if not self.items:  # a tiny corpus: the run goes on without this evaluation
            log.warning(
                "%s: left out, the validation split has no line to ask about (it needs two or more documents of "
                "more than %d lines, and lines of 8 or more characters and fewer bytes than model.block_size=%d)",
                where,
                context_lines,
                ctx.cfg.model.block_size,
            )
        elif limit is not None and len(self.items) < limit:  # its accuracy is then the noisier
            log.warning("%s: %d items, of the %d asked (limit)", where, len(self.items), limit)

    @classmethod
    def check(cls, keys: dict[str, Any], where: str) -> None:
        check_limit(keys, where)
        positive_int(keys, "context_lines", where)
        positive_int(keys, "batch_size", where)
        positive_int(keys, "choices", where, minimum=2)
        if "seed" in keys:  # a copy of the YAML from before the key: the default
            positive_int(keys, "seed", where, minimum=0)


MAX_VALIDATION_TOKENS = 1 << 21  # the documents of the first 2M tokens of each source's validation split are enough


def validation_documents(val_batches, tokenizer, eot: str) -> list[str]:
    """The text of the validation documents (each source's, for a mixture), split at the end-of-text token."""
    sources = val_batches.sources.values() if isinstance(val_batches, MixtureValBatches) else [val_batches]
    eot_id = tokenizer.token_to_id(eot)
    documents = []
    for batches in sources:
        tokens = np.asarray(batches.tokens[:MAX_VALIDATION_TOKENS])
        cuts = np.flatnonzero(tokens == eot_id)
        pieces = np.split(tokens, cuts)
        if len(tokens) == MAX_VALIDATION_TOKENS and len(pieces) > 1:
            pieces = pieces[:-1]  # cut off by the cap
        ids = [piece[piece != eot_id].tolist() for piece in pieces]
        documents += [text for text in tokenizer.decode_batch([i for i in ids if i]) if text.strip()]
    return documents


def next_line_items(
    documents: Sequence[str], *, limit: int | None, choices: int, context_lines: int, max_bytes: int, seed: int
) -> list[Item]:
    """Up to ``limit`` next-line items drawn by ``seed`` (see :class:`NextLine`)."""
    lines = [[line.rstrip() for line in doc.splitlines()] for doc in documents]
    askable = lambda line: len(line.strip()) >= 8 and len(line.encode()) <= max_bytes  # noqa: E731
    candidates = [(d, i) for d, doc in enumerate(lines) for i in range(context_lines, len(doc)) if askable(doc[i])]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(candidates))
    items = []
    for k in order:
        if limit is not None and len(items) == limit:
            break
        d, i = candidates[k]
        right = lines[d][i]
        wrong: list[str] = []
        for _ in range(20 * choices):  # draws from other documents, each line a new one
            e, j = candidates[rng.integers(len(candidates))]
            line = lines[e][j]
            if e != d and line.strip() != right.strip() and all(line.strip() != w.strip() for w in wrong):
                wrong.append(line)
                if len(wrong) == choices - 1:
                    break
        if len(wrong) < choices - 1:
            continue
        label = int(rng.integers(choices))
        options = wrong[:label] + [right] + wrong[label:]
        items.append(Item("\n".join(lines[d][i - context_lines : i]), tuple(options), label))
    return items


HELLASWAG = "Rowan/hellaswag"  # on the hub; its validation split (10,042 items) is what lm-eval's hellaswag scores
HELLASWAG_KEYS = ("activity_label", "ctx_a", "ctx_b", "endings", "label")


class HellaSwag(ChoiceTask):
    """HellaSwag's validation split, from the hub, or from ``path``: a local copy (a .jsonl, .json or .parquet
    file of its rows, or a folder saved with ``datasets``' ``save_to_disk``). Each row becomes an item as
    lm-eval's ``hellaswag`` task makes it: the context ``activity_label: ctx_a Ctx_b``, the four endings as
    choices, each cleaned of WikiHow's bracketed markup."""

    def __init__(self, ctx: EvalContext, path: str | None, limit: int | None, batch_size: int):
        where = f"eval.evals.{ctx.name}"
        self.check({"path": path, "limit": limit, "batch_size": batch_size}, where)
        items = [hellaswag_item(row, at) for at, row in hellaswag_rows(path, limit, where)]
        super().__init__(ctx, items, batch_size=batch_size, delimiter=" ", where=where)

    @classmethod
    def check(cls, keys: dict[str, Any], where: str) -> None:
        path = keys.get("path")
        if path and not Path(str(path)).exists():
            raise ConfigError(f"{where}.path: {path} does not exist")
        if not path and hub_offline():
            raise ConfigError(
                f"{where}.path: the hub is off (HF_HUB_OFFLINE) and no local copy is given; set it to HellaSwag's "
                "validation split saved as a .jsonl, .json or .parquet file or a datasets folder"
            )
        check_limit(keys, where)
        positive_int(keys, "batch_size", where)
        if path:  # every row of a local copy, before any work (preparing the data may take hours)
            for at, row in hellaswag_rows(path, keys.get("limit"), where):
                hellaswag_item(row, at)


def hub_offline() -> bool:
    import huggingface_hub.constants

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def hellaswag_rows(path: str | None, limit: int | None, where: str) -> list[tuple[str, dict[str, Any]]]:
    """The first ``limit`` rows of the validation split, from the hub or the local copy at ``path``, each with
    where it is (a JSONL file's ``file:line``, else its row number)."""
    import datasets

    from data.corpus import quiet_datasets, short_error

    source = str(path) if path else HELLASWAG
    if path and Path(path).is_file() and Path(path).suffix.lower() == ".jsonl":  # read here: an error names its line
        rows = list(itertools.islice(jsonl_rows(Path(path)), limit))
        if not rows:
            raise DataError(f"{where}.path: {path} holds no row")
        return rows
    try:
        with quiet_datasets():
            if not path:
                ds = datasets.load_dataset(HELLASWAG, split="validation")
            elif Path(path).is_dir():
                ds = datasets.load_from_disk(str(path))
                if isinstance(ds, datasets.DatasetDict):
                    if "validation" not in ds:
                        raise ConfigError(
                            f"{where}.path: {path} holds the splits {', '.join(ds)}, not HellaSwag's validation"
                        )
                    ds = ds["validation"]
            else:
                builder = {".json": "json", ".parquet": "parquet"}.get(Path(path).suffix.lower())
                if builder is None:
                    raise ConfigError(f"{where}.path: {path} is not a .jsonl, .json or .parquet file or a folder")
                ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    except ConfigError:
        raise
    except Exception as e:  # the network, the hub or the file: one line naming it
        hint = "" if path else f" (the hub; or set {where}.path to a local copy)"
        raise DataError(f"{where}: cannot load {source}{hint}: {short_error(e)}") from None
    if path and len(ds) == 0:
        raise DataError(f"{where}.path: {path} holds no row")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return [(f"{source}: row {n}", row) for n, row in enumerate(ds, 1)]


def hellaswag_item(row: dict[str, Any], where: str) -> Item:
    # datasets fills a key some rows lack with None: a missing key and a null one are the same
    missing = [key for key in HELLASWAG_KEYS if row.get(key) is None]
    if missing:
        raise DataError(f"{where}: a HellaSwag row needs {', '.join(HELLASWAG_KEYS)}; {', '.join(missing)} missing")
    for key in ("activity_label", "ctx_a", "ctx_b"):
        if not is_text(row[key]):
            raise DataError(f"{where}: {key} must be a string, got {row[key]!r}")
    if not isinstance(row["endings"], list) or not all(is_text(e) for e in row["endings"]):
        raise DataError(f"{where}: endings must be a list of strings, got {row['endings']!r}")
    label = row["label"]  # an int, or the string the hub's copy holds ("2")
    if isinstance(label, str) and label.strip().isdecimal():  # not isdigit: "²" is a digit that int() refuses
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int):
        raise DataError(f"{where}: label must be an index into endings, got {row['label']!r}")
    context = clean(row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize())
    return item_of(
        {"context": context, "choices": [clean(e) for e in row["endings"]], "label": label}, where, "endings"
    )


def clean(text: str) -> str:
    """HellaSwag's text as lm-eval cleans it: stripped, WikiHow's `` [title]`` a sentence break, other bracketed
    markup dropped, double spaces single."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")
