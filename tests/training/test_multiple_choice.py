"""Multiple-choice evaluations (training/multiple_choice.py): item for item what lm-evaluation-harness scores on
the same weights exported to transformers; two gloo ranks give one rank's result; the next-line task is made from
validation documents alone, the same items every time, and its accuracy rises from chance as a run trains; HellaSwag
is preprocessed as lm-eval's task; bad items and settings are one line naming the file and line or the key."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from data import DataError
from export import export
from sample import find_checkpoint, load_checkpoint_tokenizer, load_model
from tests.conftest import TINY, compose_config, read_metrics, run_train
from training.config import ConfigError, compose
from training.distributed import Dist
from training.evaluation import EvalContext
from training.multiple_choice import (
    ChoiceTask,
    HellaSwag,
    Item,
    MultipleChoice,
    NextLine,
    clean,
    encode_pair,
    hellaswag_item,
    next_line_items,
    validation_documents,
)

# TINY's corpus holds out one short file; 30% of its files give the next-line task documents to draw from
MORE_VAL = "data.val_fraction=0.3"
# a vocabulary the model pads (400 → 448 rows), which the export drops: the padding must be in no softmax
RUN = [*TINY, MORE_VAL, "trainer.max_steps=40", "trainer.eval_every=0", "trainer.sample_tokens=0", "eval=perplexity"]
RUN += ["data.vocab_size=400"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_cache) -> dict:
    """A 40-update tiny run, its checkpoint's model and tokenizer, its HF export, and items over its validation
    text (next lines, and by hand: a context ending in spaces, no context, a context longer than the model's)."""
    from train import train

    root = tmp_path_factory.mktemp("mc")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT_DATA_CACHE", str(data_cache))
        train(compose_config(RUN), root / "run")
    folder = find_checkpoint(str(root / "run"))
    model, state = load_model(folder, torch.device("cpu"))
    tokenizer = load_checkpoint_tokenizer(folder, model, state)
    cfg = OmegaConf.load(folder / "config.yaml")
    hf = export(compose([f"checkpoint={root / 'run'}", f"out={root / 'hf'}"], config_name="export"))
    from data import prepare

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT_DATA_CACHE", str(data_cache))
        cache = prepare(cfg.data)
    val = FakeVal(np.asarray(cache.tokens("val")))
    docs = validation_documents(val, tokenizer, "<|endoftext|>")
    items = next_line_items(docs, limit=40, choices=4, context_lines=3, max_bytes=31, seed=0)
    items += [
        Item("import os\nimport ", ("sys", "json", "collections"), 1),  # trailing space: moves to the continuation
        Item("", ("class Foo:", "def foo():", "return x"), 1),  # no context: the end-of-text token is
        Item(" ".join(f"x{i} = {i}" for i in range(40)), ("y = 1", "x40 = 40"), 1),  # > block_size: cut from the left
        Item("Café naïve — 東京:", ("✓ ok", "plain ascii"), 0),
    ]
    path = root / "items.jsonl"
    path.write_text(
        "".join(json.dumps({"context": i.context, "choices": list(i.choices), "label": i.label}) + "\n" for i in items)
    )
    return {
        **{"root": root, "model": model, "tokenizer": tokenizer, "cfg": cfg, "hf": hf, "items": path},
        **{"n": len(items), "val": val},
    }


class FakeVal:
    """What validation_documents reads of a ValBatches: its tokens."""

    def __init__(self, tokens):
        self.tokens = tokens


def context(trained, name: str = "mc", dist: Dist | None = None) -> EvalContext:
    return EvalContext(trained["cfg"], dist or Dist(), contextlib.nullcontext(), None, None, trained["tokenizer"], name)


def every_item(task: ChoiceTask, model) -> list[np.ndarray]:
    """Each item's choices' summed log-likelihoods, in the file's order."""
    model.eval()
    batches = range(-(-len(task.items) // task.batch_size))
    scored = {id(item): lls for b in batches for item, lls in task.loglikelihoods(model, b)}
    return [scored[id(item)] for item in task.items]


def lm_eval_samples(trained, tmp_path) -> list[dict]:
    """lm-eval's own run on the exported folder: a local multiple-choice task over the same JSONL, fp32, CPU."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    task = {
        "task": "template_items",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"validation": str(trained["items"])}},
        "output_type": "multiple_choice",
        "validation_split": "validation",
        "doc_to_text": "context",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "template_items.yaml").write_text(json.dumps(task))  # JSON is YAML
    lm = HFLM(pretrained=str(trained["hf"]), device="cpu", batch_size=8, dtype="float32", add_bos_token=False)
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=["template_items"],
        task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
        log_samples=True,
        num_fewshot=0,
    )
    return sorted(results["samples"]["template_items"], key=lambda s: s["doc_id"])


@pytest.mark.slow
def test_acc_and_acc_norm_equal_lm_evaluation_harness_item_for_item(trained, tmp_path):
    task = MultipleChoice(context(trained), str(trained["items"]), None, 5, " ")
    ours = every_item(task, trained["model"])
    theirs = lm_eval_samples(trained, tmp_path)
    assert len(theirs) == len(ours) == trained["n"]
    for item, lls, sample in zip(task.items, ours, theirs, strict=True):
        their_lls = np.array([ll for ll, _ in sample["filtered_resps"]])
        np.testing.assert_allclose(lls, their_lls, rtol=1e-4, atol=1e-4, err_msg=item.context)
        assert task.right(item, lls) == (sample["acc"] == 1.0, sample["acc_norm"] == 1.0), item
    # the model learned something in 40 updates: acc and acc_norm differ on some item, and neither is constant
    hits = np.array([task.right(item, lls) for item, lls in zip(task.items, ours, strict=True)])
    assert 0 < hits[:, 0].sum() < len(hits) and (hits[:, 0] != hits[:, 1]).any()
    metrics = task(trained["model"])
    assert metrics == {"eval/mc/acc": hits[:, 0].mean(), "eval/mc/acc_norm": hits[:, 1].mean()}


def rank_main(rank: int, trained_paths: dict, out: str) -> None:
    """One of two gloo ranks: the task over the items, each rank its share of the batches."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{trained_paths['store']}", rank=rank, world_size=2)
    folder = find_checkpoint(trained_paths["run"])
    model, state = load_model(folder, torch.device("cpu"))
    trained = {
        "cfg": OmegaConf.load(folder / "config.yaml"),
        "tokenizer": load_checkpoint_tokenizer(folder, model, state),
    }
    task = MultipleChoice(context(trained, dist=Dist(rank=rank, world_size=2)), trained_paths["items"], None, 3, " ")
    metrics = task(model)
    if rank == 0:
        Path(out).write_text(json.dumps(metrics))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_split_the_items_and_give_one_ranks_result(trained, tmp_path):
    alone = MultipleChoice(context(trained), str(trained["items"]), None, 3, " ")
    assert -(-trained["n"] // 3) % 2 == 1, "an odd number of batches: one rank scores a batch it does not count"
    paths = {"run": str(trained["root"] / "run"), "items": str(trained["items"]), "store": str(tmp_path / "store")}
    torch.multiprocessing.spawn(rank_main, args=(paths, str(tmp_path / "out.json")), nprocs=2)
    assert json.loads((tmp_path / "out.json").read_text()) == alone(trained["model"])


def test_next_line_asks_the_same_items_whatever_the_runs_trainer_seed_and_others_under_a_seed_of_its_own(trained):
    def items(trainer_seed: int, **seed) -> list[Item]:
        cfg = OmegaConf.merge(trained["cfg"], {"trainer": {"seed": trainer_seed}})
        ctx = EvalContext(cfg, Dist(), contextlib.nullcontext(), trained["val"], None, trained["tokenizer"], "nl")
        return NextLine(ctx, limit=20, choices=4, context_lines=3, batch_size=8, **seed).items

    same = items(1)
    assert len(same) == 20 and items(2) == same and items(1, seed=7) != same


def test_next_line_with_fewer_items_than_its_limit_says_so(trained, caplog):
    ctx = EvalContext(
        trained["cfg"], Dist(), contextlib.nullcontext(), trained["val"], None, trained["tokenizer"], "nl"
    )
    with caplog.at_level("WARNING"):
        found = len(NextLine(ctx, limit=10**6, choices=4, context_lines=3, batch_size=8).items)
    assert 0 < found < 10**6 and f"eval.evals.nl: {found} items, of the 1000000 asked (limit)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        NextLine(ctx, limit=found, choices=4, context_lines=3, batch_size=8)
    assert caplog.text == ""


def test_a_run_whose_evaluations_log_no_validation_loss_ends_saying_so(tmp_path, tiny_train, caplog):
    """Not that no validation loss "was finite": none was computed."""
    with caplog.at_level("INFO"):
        tiny_train(tmp_path / "run", ["eval=[next_line]", MORE_VAL, "trainer.max_steps=2", "trainer.sample_tokens=0"])
    assert "no validation loss (the eval group logs none: add perplexity)" in caplog.text
    assert "was finite" not in caplog.text


def test_next_line_items_come_from_the_seed_alone_and_ask_about_lines_of_their_own_document():
    docs = [f"# file {d}\n" + "".join(f"value_{d}_{i} = compute({d}, {i})\n" for i in range(12)) for d in range(6)]
    items = next_line_items(docs, limit=20, choices=4, context_lines=3, max_bytes=100, seed=7)
    assert items == next_line_items(docs, limit=20, choices=4, context_lines=3, max_bytes=100, seed=7)
    assert items != next_line_items(docs, limit=20, choices=4, context_lines=3, max_bytes=100, seed=8)
    assert len(items) == 20 and {i.label for i in items} == {0, 1, 2, 3}
    for item in items:
        right, wrong = item.choices[item.label], [c for k, c in enumerate(item.choices) if k != item.label]
        document = right.split("_")[1]  # value_<document>_<line>
        assert len(item.context.splitlines()) == 3 and (item.context + "\n" + right) in docs[int(document)]
        assert all(w.split("_")[1] != document for w in wrong), "distractors come from other documents"
    # too long for the model's context, or too short to ask about: never a choice
    long = [f"# {d}\n" + "x = 1\n" * 3 + "y" * 200 + "\n" for d in range(5)]
    assert next_line_items(long, limit=None, choices=2, context_lines=3, max_bytes=100, seed=0) == []


WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "tiger",
    "lamp",
    "forest",
    "honey",
    "violin",
    "candle",
    "desert",
    "mirror",
    "ocean",
    "pepper",
    "rocket",
    "silver",
    "tunnel",
    "velvet",
    "wagon",
    "yellow",
    "anchor",
    "basket",
    "cotton",
    "dragon",
    "engine",
    "falcon",
    "garden",
    "hammer",
    "island",
    "jacket",
    "kettle",
    "lemon",
    "marble",
    "needle",
    "orange",
    "pillow",
    "quartz",
    "saddle",
    "timber",
    "umbrella",
]


def chain_corpus(folder: Path) -> Path:
    """120 files of lines of three words, each word the one after the last in a fixed cycle of 40: which line
    comes next is learned from the training files, and a model that has learned it knows the next line."""
    import random

    rng, folder = random.Random(0), Path(folder)
    folder.mkdir()
    for d in range(120):
        start = rng.randrange(len(WORDS))
        words = [WORDS[(start + i) % len(WORDS)] for i in range(48)]
        lines = [" ".join(words[i : i + 3]) for i in range(0, 48, 3)]
        (folder / f"doc{d:03d}.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_a_made_item_that_does_not_fit_once_encoded_is_left_out_where_a_given_one_is_refused(trained):
    """A next line that fits alone, after a context ending in blank lines (which move into the continuation)."""
    tokenizer, block = trained["tokenizer"], int(trained["cfg"].model.block_size)
    fits = lambda context, line: len(encode_pair(tokenizer, context, "\n" + line, 0)[1]) <= block  # noqa: E731
    line = "ok"
    while fits("x", line + "ǅ"):
        line += "ǅ"
    assert fits("x", line) and not fits("x\n\n", line)
    items = [Item("x\n\n", (line, "a short line"), 0), Item("x", ("one line", "another line"), 1)]
    made = ChoiceTask(context(trained), items, batch_size=2, delimiter="\n", where="w", leave_out_unfit=True)
    assert made.items == items[1:] and len(made.pairs) == 1
    with pytest.raises(DataError, match=rf"^w: item 1: a choice of \d+ tokens, more than model.block_size={block}$"):
        ChoiceTask(context(trained), items, batch_size=2, delimiter="\n", where="w")


def test_next_line_accuracy_rises_from_chance_as_a_run_learns_and_asks_the_same_items_after_resume(
    tmp_path, tiny_train
):
    """Every run (the default eval) logs eval/next_line/acc(_norm) beside val/bpb in each sink (here metrics.jsonl
    and the CSV sink). On text whose next line can be learned it rises from chance (1 in 4) to near 1. A run
    stopped and resumed asks the same items, so its curve is the uninterrupted run's."""
    corpus = chain_corpus(tmp_path / "corpus")
    args = [
        "data=text_files",
        f"data.path={corpus}",
        "data.val_fraction=0.3",
        "data.vocab_size=300",
        "trainer.batch_size=8",
        "optim.lr=1e-2",
        "trainer.max_steps=200",
        "trainer.eval_every=100",
        "logger=csv",
    ]
    whole = tiny_train(tmp_path / "whole", args)
    curve = [r for r in read_metrics(whole) if "eval/next_line/acc" in r]
    assert [r["step"] for r in curve] == [0, 100, 200]
    assert curve[0]["eval/next_line/acc"] < 0.4 and curve[0]["eval/next_line/acc_norm"] < 0.4, curve[0]
    assert curve[-1]["eval/next_line/acc"] > 0.9 and curve[-1]["eval/next_line/acc_norm"] > 0.9, curve[-1]
    import csv

    with open(whole / "metrics.csv", newline="") as fh:
        logged = [r for r in csv.DictReader(fh) if r["eval/next_line/acc"]]
    assert [float(r["eval/next_line/acc"]) for r in logged] == [r["eval/next_line/acc"] for r in curve]
    from train import Stopped

    with pytest.raises(Stopped):
        tiny_train(tmp_path / "resumed", args + ["trainer.stop_at=150", "trainer.ckpt_every=50"])
    tiny_train(tmp_path / "resumed", args + ["trainer.ckpt_every=50"])
    again = [r for r in read_metrics(tmp_path / "resumed") if "eval/next_line/acc" in r]
    assert [(r["step"], r["eval/next_line/acc"], r["eval/next_line/acc_norm"]) for r in again] == [
        (r["step"], r["eval/next_line/acc"], r["eval/next_line/acc_norm"]) for r in curve
    ]


ROWS = [
    {
        "activity_label": "Making a cake",
        "ctx_a": "A man mixes flour  and eggs.",
        "ctx_b": "then he",
        "endings": ["pours it [title] into a pan.", "eats the [header] bowl.", " sings  loudly. ", "leaves."],
        "label": "0",
    },
    {
        "activity_label": "Home and Garden",
        "ctx_a": "[header] How to water plants [title] Check the soil.",
        "ctx_b": "",
        "endings": ["Water deeply.", "Paint the pot.", "Sell it.", "[step] Wait a week."],
        "label": "3",
    },
]


def test_hellaswag_items_are_lm_evals_preprocessed_docs_from_a_jsonl_a_parquet_file_or_a_saved_folder(
    trained, tmp_path
):
    import datasets
    from lm_eval.tasks.hellaswag.utils import process_docs

    theirs = process_docs(datasets.Dataset.from_list(ROWS))
    expected = [Item(d["query"], tuple(d["choices"]), d["gold"]) for d in theirs]
    assert [hellaswag_item(row, "x") for row in ROWS] == expected
    assert clean(" a [title] b  [x]c ") == "a. b c"
    (tmp_path / "h.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    datasets.Dataset.from_list(ROWS).to_parquet(tmp_path / "h.parquet")
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(ROWS)}).save_to_disk(tmp_path / "saved")
    for path in ("h.jsonl", "h.parquet", "saved"):
        task = HellaSwag(context(trained, "hellaswag"), str(tmp_path / path), None, 8)
        assert task.items == expected, path
        assert set(task(trained["model"])) == {"eval/hellaswag/acc", "eval/hellaswag/acc_norm"}
    assert HellaSwag(context(trained, "hellaswag"), str(tmp_path / "h.jsonl"), 1, 8).items == expected[:1]


@pytest.mark.parametrize(
    "lines, error",
    [
        (['{"context": "a", "choices": ["b", "c"], "label": 0}', "{oops"], r"^{path}:2: not a JSON object"),
        (
            ['{"context": "a", "choices": ["b", "c"], "label": 2}'],
            r"^{path}:1: label must be an index into choices, 0 to 1, got 2$",
        ),
        (['{"context": "a", "choices": ["b"], "label": 0}'], r"^{path}:1: choices must be a list of two or more"),
        (["", '{"context": "a", "label": 0}'], r"^{path}:2: an item needs the keys context, choices and label$"),
        (
            ['{"context": "a", "choices": ["b", "' + "word " * 40 + '"], "label": 0}'],
            r"^{path}:1: a choice of \d+ tokens, more than model.block_size=32$",
        ),
        ([], r"^{path}: no items$"),
        (['{"context": "\\ud800", "choices": ["b", "c"], "label": 0}'], r"^{path}:1: context must be a string$"),
        (["[" * 100_000 + "]" * 100_000], r"^{path}:1: not a JSON object \(nested too deeply\)$"),
        (['{"context": "a", "choices": ["b", "c"], "label": 1' + "0" * 5000 + "}"], r"^{path}:1: not a JSON object \("),
    ],
)
def test_a_bad_item_is_one_line_naming_the_file_and_line(trained, tmp_path, lines, error):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(DataError, match=error.replace("{path}", str(path).replace(".", r"\."))):
        MultipleChoice(context(trained), str(path), None, 8, " ")


def test_a_file_that_is_not_utf_8_is_one_line_naming_its_line(trained, tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"context": "a", "choices": ["b", "c"], "label": 0}\n' + '{"context": "café"'.encode("latin-1"))
    with pytest.raises(DataError, match=f"^{path}:2: not UTF-8 text$"):
        MultipleChoice(context(trained), str(path), None, 8, " ")


@pytest.mark.parametrize(
    "change, error",
    [
        ({"ctx_b": None}, "ctx_b missing"),  # a key some rows lack: datasets fills it with None
        ({"endings": None}, "endings missing"),
        ({"endings": "abcd"}, "endings must be a list of strings, got 'abcd'"),
        ({"ctx_a": 5}, "ctx_a must be a string, got 5"),
        ({"label": 2.7}, "label must be an index into endings, got 2.7"),
        ({"label": "x"}, "label must be an index into endings, got 'x'"),
        ({"label": "²"}, "label must be an index into endings, got '²'"),  # a digit to str.isdigit, not to int()
    ],
)
def test_a_hellaswag_row_of_another_shape_is_one_line_naming_it(change, error):
    with pytest.raises(DataError, match=f"^row 2: .*{re.escape(error)}"):
        hellaswag_item({**ROWS[0], **change}, "row 2")


def test_a_local_hellaswag_copy_is_checked_row_by_row_with_the_config_naming_its_line(tmp_path):
    """Before any work (the data's preparation may take hours); a JSONL file's line, as datasets cannot say it."""
    import datasets

    good, where = json.dumps(ROWS[0]), "eval.evals.hellaswag"
    cases = [
        (["", json.dumps({**ROWS[0], "ctx_b": None})], r"h\.jsonl:2: a HellaSwag row needs .*; ctx_b missing$"),
        ([good, "", "{oops"], r"h\.jsonl:3: not a JSON object"),
        ([json.dumps({**ROWS[0], "label": 7})], r"h\.jsonl:1: label must be an index into endings, 0 to 3, got 7$"),
        ([], r"^eval\.evals\.hellaswag\.path: .*h\.jsonl holds no row$"),
    ]
    for lines, error in cases:
        (tmp_path / "h.jsonl").write_text("".join(line + "\n" for line in lines))
        with pytest.raises(DataError, match=error):
            HellaSwag.check({"path": str(tmp_path / "h.jsonl"), "limit": None, "batch_size": 8}, where)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(tmp_path / "saved")
    with pytest.raises(ConfigError, match=r"saved holds the splits train, not HellaSwag's validation$"):
        HellaSwag.check({"path": str(tmp_path / "saved"), "limit": None, "batch_size": 8}, where)


def test_a_choice_of_no_tokens_beside_others_is_one_line_naming_its_line(trained, tmp_path):
    """With no delimiter, a choice can complete the context's last token: after the context's tokens, none."""
    encode = trained["tokenizer"].encode
    word = next(w for w in (" import", " return", " def", " self", " the") if len(encode(w).ids) == 1)
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"context": "x =" + word[:2], "choices": [word[2:], "zz9"], "label": 0}) + "\n")
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}:1: a choice of no tokens$"):
        MultipleChoice(context(trained), str(path), None, 8, "")


class Greedy:
    """A tokenizer that takes the longest piece of its vocabulary at each position."""

    VOCAB = {"ab": 10, "a": 1, "b": 2, "c": 3}

    def encode(self, text: str, add_special_tokens: bool = False):
        ids, i = [], 0
        while i < len(text):
            piece = next(p for p in sorted(self.VOCAB, key=len, reverse=True) if text.startswith(p, i))
            ids.append(self.VOCAB[piece])
            i += len(piece)
        return type("Encoding", (), {"ids": ids})()


def test_a_context_whose_end_merges_with_the_choice_is_encoded_alone_as_lm_eval_does():
    """ "a" + "bc" encodes as ab·c: lm-eval conditions on "a" alone and scores what follows its length in the whole."""
    assert encode_pair(Greedy(), "a", "bc", eot_id=0) == ([1], [3])


def test_a_blank_context_is_scored_after_the_end_of_text_token_as_an_empty_one(trained, tmp_path):
    path = tmp_path / "items.jsonl"
    rows = [{"context": c, "choices": ["class Foo:", "def foo():"], "label": 1} for c in ("", "\n  ")]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = MultipleChoice(context(trained), str(path), None, 8, " ")
    eot = trained["tokenizer"].token_to_id("<|endoftext|>")
    assert [pair[0] for pairs in task.pairs for pair in pairs] == [[eot]] * 4
    assert all(np.isfinite(lls).all() for lls in every_item(task, trained["model"]))


def test_a_bad_items_file_is_refused_by_the_config_checks_before_any_work(tmp_path):
    """Not after the data is prepared (hours, on a large corpus): the checks read the file."""
    from tests.conftest import compose_config
    from training.config import USER_ERRORS, check_config

    items = tmp_path / "items.jsonl"
    items.write_text('{"context": "a", "choices": ["b", "c"], "label": 2}\n')
    cfg = compose_config(["eval=[multiple_choice]", f"eval.evals.multiple_choice.path={items}"])
    said = rf"^eval.evals.multiple_choice: {items}:1: label must be an index into choices, 0 to 1, got 2$"
    with pytest.raises(USER_ERRORS, match=said):
        check_config(cfg)
    items.write_text("\n")
    with pytest.raises(USER_ERRORS, match=rf"^eval.evals.multiple_choice: {items}: no items$"):
        check_config(cfg)


def test_bad_eval_settings_stop_train_py_with_one_line_naming_the_key_and_write_nothing(tmp_path, data_cache):
    items = tmp_path / "items.jsonl"
    items.write_text('{"context": "a", "choices": ["b", "c"], "label": 0}\n')
    cases = [
        (["eval=[perplexity,multiple_choice]"], {}, "error: eval.evals.multiple_choice.path must be a JSONL file"),
        (
            ["eval=[perplexity,multiple_choice]", "eval.evals.multiple_choice.path=nowhere.jsonl"],
            {},
            "error: eval.evals.multiple_choice.path: nowhere.jsonl is not a file",
        ),
        (
            ["eval=[perplexity,hellaswag]"],
            {"HF_HUB_OFFLINE": "1"},
            "error: eval.evals.hellaswag.path: the hub is off (HF_HUB_OFFLINE) and no local copy is given",
        ),
        (
            [
                "eval=[multiple_choice]",
                f"eval.evals.multiple_choice.path={items}",
                "eval.evals.multiple_choice.target_delimiter=null",
            ],
            {},
            "error: eval.evals.multiple_choice.target_delimiter must be a string",
        ),
        (["eval.evals.next_line.choices=1"], {}, "error: eval.evals.next_line.choices must be an integer ≥ 2"),
        (["eval.evals.next_line.limit=0"], {}, "error: eval.evals.next_line.limit must be an integer > 0 or null"),
    ]
    for n, (args, env, line) in enumerate(cases):
        run = tmp_path / f"run{n}"
        proc = run_train([*TINY, *args], run, data_cache, env=env, check=False)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith(line), proc.stderr[-500:]
        assert "Traceback" not in proc.stderr and not run.exists()


def test_the_sweep_report_has_each_runs_final_accuracies(tmp_path):
    from training.report import write_report

    for job, (acc, bpb) in enumerate([(0.4, 2.0), (0.55, 1.9)]):
        run = tmp_path / str(job)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- optim.lr={job + 1}e-3\n")
        rows = [
            {"step": 0, "tokens": 0, "val/bpb": 3.0, "eval/next_line/acc": 0.25, "eval/next_line/acc_norm": 0.2},
            {
                "step": 10,
                "tokens": 100,
                "val/bpb": bpb,
                "eval/next_line/acc": acc,
                "eval/next_line/acc_norm": acc - 0.1,
            },
        ]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "summary.json").write_text(
            json.dumps({"status": "ok", "total_steps": 10, "tokens": 100, "seconds": 1.0})
        )
    write_report(tmp_path)
    import csv

    with open(tmp_path / "report.csv", newline="") as fh:
        table = {r["optim.lr"]: r for r in csv.DictReader(fh)}
    assert float(table["2e-3"]["final eval/next_line/acc"]) == 0.55
    assert float(table["1e-3"]["final eval/next_line/acc_norm"]) == pytest.approx(0.3)
    assert "| final eval/next_line/acc | final eval/next_line/acc_norm |" in (tmp_path / "report.md").read_text()
