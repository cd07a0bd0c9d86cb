"""The commands the README and docs/ show are commands the template accepts: every ``train.py`` line composes and
passes the config checks, every ``sample.py`` and ``export.py`` line's settings pass their checks, every schedule
plot draws, every forecast from the fit the docs ship runs (a fit or a comparison with runs needs those runs made
first, so those lines are only parsed), and the README's error example is the error a user gets."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import ROOT, compose_config
from training.config import USER_ERRORS, check_config, check_overrides, compose

# extending.md's commands run the files its examples add: tests/test_extending.py runs them in a copy with those files
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "extending.md")]


def commands(script: str) -> list[tuple[str, list[str]]]:
    """(page, arguments after ``script``) for every shell line of the pages' code blocks that runs ``script``; a
    placeholder such as ``<partition>`` stands for a value of that name."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for part in re.split(r"&&|;", line):
                    words = [re.sub(r"<([\w-]+)>", r"\1", w) for w in shlex.split(part, comments=True)]  # <partition>
                    if script in words:
                        found.append((page.name, words[words.index(script) + 1 :]))
    return found


TRAIN = commands("train.py")
SAMPLE = commands("sample.py")
EXPORT = commands("export.py")
PLOT = [(page, args[1:]) for page, args in commands("-m") if args[:1] == ["scheduling.plot"]]
FORECAST = [(page, args[1:]) for page, args in commands("-m") if args[:1] == ["scheduling.forecast"]]


def test_the_pages_show_commands_of_every_entry_point():
    assert len(TRAIN) > 30 and len(SAMPLE) >= 3 and len(EXPORT) >= 2 and len(PLOT) >= 1 and len(FORECAST) >= 3


@pytest.mark.parametrize("page,args", TRAIN, ids=[f"{p}: {' '.join(a)}" for p, a in TRAIN])
def test_every_train_py_command_shown_composes_and_passes_the_checks(page, args):
    check_overrides(args)
    if "--cfg" in args:
        return
    overrides = [a for a in args if not a.startswith("-") and not a.startswith("hydra.")]
    first = [re.sub(r"=([^,=]+),.*$", r"=\1", a) if "," in a and "[" not in a else a for a in overrides]
    check_config(compose(first))  # a sweep: its first job


@pytest.mark.parametrize("page,args", SAMPLE, ids=[f"{p}: {' '.join(a)}" for p, a in SAMPLE])
def test_every_sample_py_command_shown_has_settings_sample_py_accepts(page, args):
    from sample import check_sample_config

    check_overrides(args, "sample")
    from omegaconf import OmegaConf

    check_sample_config(OmegaConf.to_container(compose(args, config_name="sample"), resolve=True))


@pytest.mark.parametrize("page,args", EXPORT, ids=[f"{p}: {' '.join(a)}" for p, a in EXPORT])
def test_every_export_py_command_shown_has_settings_export_py_accepts(page, args):
    from omegaconf import OmegaConf

    from export import check_export_config

    check_overrides(args, "export")
    check_export_config(OmegaConf.to_container(compose(args, config_name="export"), resolve=True))


@pytest.mark.parametrize("page,args", PLOT, ids=[f"{p}: {' '.join(a)}" for p, a in PLOT])
def test_every_schedule_plot_shown_draws(page, args, tmp_path):
    from scheduling import plot

    out = [a for a in args if a != "--out" and not a.endswith(".png")]
    assert plot.main([*out, "--out", str(tmp_path / "lr.png")]) == 0
    assert (tmp_path / "lr.png").stat().st_size > 0


@pytest.mark.parametrize("page,args", FORECAST, ids=[f"{p}: {' '.join(a)}" for p, a in FORECAST])
def test_every_forecast_shown_runs_or_parses(page, args, tmp_path):
    from scheduling import forecast

    without_out = [a for i, a in enumerate(args) if a != "--out" and (i == 0 or args[i - 1] != "--out")]
    needs_runs = args[0] == "fit" or "--against" in args
    if needs_runs:  # the runs are the ones the page's train.py lines make: check the command line alone
        forecast.parser().parse_args(args)
        return
    assert forecast.main([*without_out, "--out", str(tmp_path / ("knots.csv" if args[0] == "optimize" else "f"))]) == 0
    assert any(p.suffix == ".png" and p.stat().st_size > 0 for p in tmp_path.iterdir())


def test_the_readme_error_example_is_the_error_a_user_gets():
    example = re.search(r"\$ python train.py (\S+)\n(error: .*)\n", (ROOT / "README.md").read_text())
    with pytest.raises(USER_ERRORS) as err:
        check_config(compose_config([example.group(1)]))
    assert f"error: {err.value}" == example.group(2)


CONF = ROOT / "conf"


def test_the_architecture_page_links_every_config_group_and_each_link_exists():
    """Its key table points at conf/'s files, which hold the keys; it lists none of them itself."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    links = re.findall(r"\]\(\.\./(conf/[^)]*)\)", page)
    assert links and all((ROOT / link).exists() for link in links), [
        link for link in links if not (ROOT / link).exists()
    ]
    linked = {Path(link).parts[1] for link in links if (ROOT / link).is_dir() or len(Path(link).parts) > 2}
    assert {p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"} <= linked


def all_keys() -> dict[str, set[str]]:
    """Every key each group defines in any of its options (a section's keys as ``section.key``)."""
    from scheduling.spec import register_resolvers
    from training.config import GROUPS, known_keys

    register_resolvers()  # trainer.max_steps' default reads one
    keys = {g: {k for p in (CONF / g).glob("*.yaml") for k in known_keys(g, p.stem)} for g in GROUPS}
    keys["model"] |= set(known_keys("model", None))
    return keys


FILE_SUFFIXES = ("json", "jsonl", "py", "safetensors", "yaml", "png", "csv", "md")


def python_name(name: str) -> bool:
    """Whether ``name`` is a module or an attribute of one (``model.hf``, ``model.sample_text``), not a key."""
    import importlib

    module, _, attr = name.rpartition(".")
    for candidate, rest in ((name, None), (module, attr)):
        try:
            found = importlib.import_module(candidate)
        except ImportError:
            continue
        return rest is None or hasattr(found, rest)
    return False


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_config_key_the_docs_name_is_a_key_of_its_group(page):
    keys = all_keys()
    groups = "model|optim|schedule|data|trainer|logger|eval"
    named = set(re.findall(rf"`\+?((?:{groups})\.[a-z_.]+[a-z_])", page.read_text()))
    named = {k for k in named if k.rsplit(".", 1)[1] not in FILE_SUFFIXES and not python_name(k)}
    unknown = sorted(
        k for k in named if not k.startswith("data.sources.") and k.split(".", 1)[1] not in keys[k.split(".")[0]]
    )
    assert not unknown, f"{page.name} names keys no option of conf/ defines: {unknown}"
