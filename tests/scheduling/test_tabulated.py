"""``schedule=tabulated``: λ from knots in a file, exact at each knot and straight between, the floor after T; run,
resumed, audited and plotted as every other schedule; bad knots refused in one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduling import Schedule, ScheduleError, schedule_from_config
from scheduling import audit as audit_cli
from scheduling import plot as plot_cli
from tests.conftest import read_metrics
from training.signals import Stopped

T, W = 12, 2
KNOTS = ((5, 1.0), (6, 0.4), (9, 0.25), (T, 0.05))  # the peak to update 5, a step, a slope, a slope to T


def knots_file(path: Path, knots=KNOTS, header: str = "update,lambda") -> Path:
    path.write_text("# a comment line\n" + header + "\n" + "".join(f"{t},{y}\n" for t, y in knots))
    return path


def test_the_schedule_is_its_knots_exactly_straight_between_them_and_the_last_after_T():
    s = Schedule("tabulated", total_steps=T, warmup_steps=W, knots=KNOTS)
    assert [s(t) for t in range(W)] == [t / W for t in range(W)]  # the warmup, as every schedule's
    assert [s(t) for t, _ in KNOTS] == [y for _, y in KNOTS]  # exactly the knots
    points = [(W, 1.0), *KNOTS]
    for (t0, y0), (t1, y1) in zip(points, points[1:], strict=False):
        for t in range(t0, t1 + 1):
            assert s(t) == pytest.approx(y0 + (y1 - y0) * (t - t0) / (t1 - t0), abs=1e-15), t
    assert {s(t) for t in range(T, 3 * T)} == {KNOTS[-1][1]}


def test_a_knots_file_gives_the_schedule_train_py_runs(tmp_path, compose_config):
    path = knots_file(tmp_path / "knots.csv")
    cfg = compose_config(["schedule=tabulated", f"schedule.knots={path}", f"schedule.warmup_steps={W}"])
    schedule = schedule_from_config(dict(cfg.schedule), T, 1e-3)
    written = Schedule("tabulated", total_steps=T, warmup_steps=W, knots=KNOTS)
    assert schedule.params["knots"] == KNOTS
    assert [schedule(t) for t in range(2 * T)] == [written(t) for t in range(2 * T)]


@pytest.mark.parametrize(
    "text, says",
    [
        ("update,lambda\n5,1.0\n6,0.4\n9,0.5\n12,0.05\n", "knot 3 (update 9) has λ = 0.5, above the 0.4 before it"),
        ("update,lambda\n2,0.9\n12,0.1\n", "knot 1 is at update 2; the knots lie at increasing updates after the warm"),
        ("update,lambda\n8,0.5\n6,0.4\n12,0.1\n", "knot 2 is at update 6; the knots lie at increasing updates after"),
        (
            "update,lambda\n5,1.0\n10,0.1\n",
            "the last knot is at update 10, and the run has 12 updates; a tabulated schedule",
        ),
        ("update,lambda\n5,1.5\n12,0.1\n", "λ = 1.5; λ is a fraction of the peak, in [0, 1]"),
        ("update,lambda\n5.5,0.5\n12,0.1\n", "row 2: the update must be a whole number"),
        ("update,lambda\n5,0.5\n1e30,0.1\n", "row 3: the update must be ≤ 2**53, got '1e30'"),  # no T ends there
        ("update,lambda\n5,half\n12,0.1\n", "row 2: expected an update and a λ, got '5,half'"),
        ("t,lr\n5,0.5\n12,0.1\n", "must start with the header line update,lambda"),
        ("update,lambda\n", "holds no knot"),
    ],
)
def test_bad_knots_are_one_line_naming_the_file_and_what_is_allowed(tmp_path, text, says):
    path = tmp_path / "knots.csv"
    path.write_text(text)
    with pytest.raises(ScheduleError) as err:
        schedule_from_config({"name": "tabulated", "knots": str(path), "warmup_steps": W}, T, 1e-3)
    message = str(err.value)
    assert message.startswith("schedule.knots") and str(path) in message and "\n" not in message, message
    assert says in message, message


def test_a_knots_file_saved_with_a_byte_order_mark_reads_as_without(tmp_path):
    path = knots_file(tmp_path / "knots.csv")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as spreadsheets write UTF-8 CSV
    schedule = schedule_from_config({"name": "tabulated", "knots": str(path), "warmup_steps": W}, T, 1e-3)
    assert schedule.params["knots"] == KNOTS


def test_under_a_token_budget_the_knots_must_end_at_its_T_and_a_time_budget_is_refused(tmp_path, compose_config):
    from training.config import ConfigError, check_config

    path = knots_file(tmp_path / "knots.csv")
    given = ["schedule=tabulated", f"schedule.knots={path}", f"schedule.warmup_steps={W}"]
    check_config(compose_config([*given, "trainer.max_tokens=100000"]))  # T is known once the batch is
    budget = "the T of trainer.max_tokens=100000"  # as train.py names T under a budget
    with pytest.raises(ScheduleError, match=rf"the run has {T + 1} updates \({budget}\)") as err:
        schedule_from_config(dict(compose_config(given).schedule), T + 1, 1e-3, budget)
    # what each refusal says to run instead is a command line that runs
    assert str(err.value).endswith(f"run it with trainer.max_steps={T} trainer.max_tokens=null")
    check_config(
        compose_config([*given, "trainer.max_tokens=100000", f"trainer.max_steps={T}", "trainer.max_tokens=null"])
    )
    with pytest.raises(
        ConfigError, match=rf"^trainer.max_time: schedule=tabulated ends at its last knot, update {T},"
    ) as err:
        check_config(compose_config([*given, "trainer.max_time=60"]))
    assert f"set trainer.max_steps={T} and trainer.max_time=null instead" in str(err.value)
    check_config(compose_config([*given, "trainer.max_time=60", f"trainer.max_steps={T}", "trainer.max_time=null"]))


def test_a_missing_unreadable_or_no_knots_file_is_refused(tmp_path):
    (tmp_path / "latin1.csv").write_bytes("update,lambda\n# \xe9t\xe9\n5,1.0\n".encode("latin-1"))
    for given, says in [
        (None, "schedule.knots must be a CSV file of (update, lambda) knots, got None"),
        (str(tmp_path / "nope.csv"), "nope.csv is not a file"),
        (str(tmp_path / "latin1.csv"), "latin1.csv cannot be read as UTF-8 text"),
    ]:
        with pytest.raises(ScheduleError, match="^schedule.knots") as err:
            schedule_from_config({"name": "tabulated", "knots": given}, T, 1e-3)
        assert says in str(err.value)


def test_the_plot_refuses_increasing_knots_in_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "knots.csv"
    path.write_text("update,lambda\n5,0.5\n8,0.7\n12,0.1\n")
    args = ["schedule=tabulated", f"schedule.knots={path}", f"trainer.max_steps={T}", f"schedule.warmup_steps={W}"]
    assert plot_cli.main([*args, "--out", str(tmp_path / "lr.png")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: schedule.knots ({path}): knot 2 (update 8) has λ = 0.7")
    assert "above the 0.5 before it; the lr must never increase after the warmup" in lines[0]
    assert not (tmp_path / "lr.png").exists()


def test_it_is_plotted_with_its_floor_like_every_schedule(tmp_path, capsys):
    path = knots_file(tmp_path / "knots.csv")
    args = [
        "schedule=tabulated",
        f"schedule.knots={path}",
        f"trainer.max_steps={T}",
        f"schedule.warmup_steps={W}",
        "optim.lr=1e-3",
        "--out",
        str(tmp_path / "lr.png"),
    ]
    assert plot_cli.main(args) == 0
    text = capsys.readouterr().out
    assert "tabulated (4 knots)" in text and (tmp_path / "lr.png").stat().st_size > 0
    assert "end (T)" in text and "5.0000e-05" in text  # the last knot's λ · peak


def test_a_run_follows_its_knots_passes_the_audit_and_resumes_bit_for_bit(tmp_path, tiny_train, capsys):
    path = knots_file(tmp_path / "knots.csv")
    args = [
        "schedule=tabulated",
        f"schedule.knots={path}",
        f"trainer.max_steps={T}",
        f"schedule.warmup_steps={W}",
        "trainer.eval_every=4",
        "model.dropout=0.1",
        "optim.lr=1e-3",
    ]
    whole = read_metrics(tiny_train(tmp_path / "whole", args))
    expected = Schedule("tabulated", total_steps=T, warmup_steps=W, knots=KNOTS)
    assert [r["train/lr"] for r in whole if "train/lr" in r] == [1e-3 * expected(t) for t in range(T)]

    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", [*args, "trainer.stop_at=7"])  # stopped between the knots at 6 and 9
    resumed = read_metrics(tiny_train(tmp_path / "run", args))
    keys = ("step", "train/loss", "train/lr", "train/grad_norm", "val/loss", "val/bpb")
    assert [[r.get(k) for k in keys] for r in resumed] == [[r.get(k) for k in keys] for r in whole]

    assert audit_cli.main([str(tmp_path / "run")]) == 0
    assert "every logged lr is the schedule's within 1e-09" in capsys.readouterr().out


def test_a_resume_with_other_knots_is_refused_in_one_line(tmp_path, tiny_train):
    path = knots_file(tmp_path / "knots.csv")
    args = ["schedule=tabulated", f"schedule.knots={path}", f"trainer.max_steps={T}", f"schedule.warmup_steps={W}"]
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", [*args, "trainer.stop_at=3"])
    knots_file(path, KNOTS[:-1] + ((T, 0.0),))  # the file changed since
    with pytest.raises(ScheduleError) as err:
        tiny_train(tmp_path / "run", args)
    message = str(err.value)
    assert "another schedule (schedule.knots ((5, 1.0), (6, 0.4), (9, 0.25), (12, 0.05)) → " in message
    assert "\n" not in message
