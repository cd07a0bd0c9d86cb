"""Config checks: every value of a composed config is checked here, before any work is done or file written.

Each check raises an error whose message is one line naming the key, what is allowed and what was given. The
model, data and schedule groups are checked by their own packages (``ModelConfigError``, ``DataError``,
``ScheduleError``); ``USER_ERRORS`` is every such type, which the entry points print as ``error: <message>`` and
exit with code 2. Hydra's own composition errors (an unknown group option, a mistyped key) come before this.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import itertools
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from data import DataError
from data.atomic import DiskFull
from data.corpus import SOURCES as CORPUS_SOURCES
from model import TOKENIZER_KEYS, GPTConfig, ModelConfigError, check_model_config
from scheduling import ScheduleError, schedule_from_config
from scheduling.spec import (
    CONF,
    SettingError,
    check_total_steps,
    compose,
    first_line,
    is_int,
    is_number,
    read_knots,
)

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp8")
STRATEGIES = ("auto", "single", "ddp", "fsdp")
COMPILE = ("auto", True, False)
NONFINITE = ("stop", "skip")
NS_DTYPE_CHOICES = ("auto", "bfloat16", "float32")  # optim.muon.ns_dtype
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")
SOURCES = (*CORPUS_SOURCES, "mixture")
DECODE_POLICIES = ("skip", "replace", "error")
BUDGET_KEYS = ("max_steps", "max_tokens", "max_time")
PROVISIONAL_STEPS = 10**9  # stands for T in checks made before a budget fixes it
MAX_HANG_TIMEOUT_S = 30 * 24 * 3600  # 30 days: a deadline (the watchdog's, a collective's) must stay a valid time
MAX_TIME_S = 10**9  # trainer.max_time: 31 years (far past it the planned T overflows); the message names it


class ConfigError(SettingError):
    """A bad trainer, optimizer or logger value, or an unusable checkpoint: one line naming the key or file."""


# Each is one line for the user, printed as ``error: …`` with exit code 2; all but DiskFull (an OSError: a write
# ran out of space) are ValueErrors.
USER_ERRORS = (ConfigError, DataError, ModelConfigError, ScheduleError, DiskFull)


@contextlib.contextmanager
def enough_memory(what: str, sizes: str) -> Iterator[None]:
    """Memory that the config's sizes cannot get (a batch of 10**11 windows, a model of 10**12 dims, 10**8
    samples at once) is bad input, in one line naming the keys that size ``what``, not an allocator's traceback."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:  # torch's: OutOfMemoryError on a GPU, a RuntimeError on the CPU
        if not isinstance(e, (MemoryError, torch.OutOfMemoryError)) and "can't allocate memory" not in str(e):
            raise
        raise ConfigError(f"not enough memory for {what} ({first_line(e)}); lower what sizes it: {sizes}") from None


def compose_checked(overrides: list[str]):
    """train.py's config with ``overrides``, through train.py's checks (the benchmarks' way in)."""
    check_overrides(overrides)
    cfg = compose(overrides)
    check_config(cfg)
    return cfg


def integer_expected(expected: str, v: Any) -> str:
    """What an integer key allows, with a hint when a float was given for it (``1e3`` reads as 1000.0)."""
    if isinstance(v, float) and v.is_integer():
        return f"{expected} (write {int(v)}, without a decimal point or exponent)"
    return expected


GROUPS = ("model", "optim", "schedule", "data", "trainer", "logger", "eval")
# Sections whose entries the user names (a mixture's sources); their own check refuses a bad entry's keys.
NAMED_SECTIONS = ("data.sources",)
OPTION_KEY = {"optim": "name", "schedule": "name", "data": "source"}  # names the option's file
# Groups that take several options at once (logger=[wandb,csv]): each option adds an entry, under its own name, to
# this section (training.components)
LIST_GROUPS = {"logger": "sinks", "eval": "evals"}


def known_keys(group: str, option: str | None) -> list[str]:
    """The keys a group may hold when ``option`` is chosen: those its file in conf/ (and the files it extends)
    defines, a section's own keys as ``section.key``; the model's are GPTConfig's fields but the vocabulary
    size and the document separator, which the tokenizer sets."""
    if group == "model":
        return [
            "name",
            *(f.name for f in fields(GPTConfig) if f.name not in TOKENIZER_KEYS),
            "init_from",
        ]
    from omegaconf import OmegaConf

    path = CONF / group / f"{option or 'default'}.yaml"
    if not path.is_file():
        return []
    node = option_yaml(group, option or "default")
    inherited = [k for base in node.get("defaults", []) if base != "_self_" for k in known_keys(group, base)]
    own = [k for k in node if k != "defaults"]
    own += [f"{k}.{sub}" for k in own if OmegaConf.is_dict(node[k]) for sub in node[k]]
    return list(dict.fromkeys([*inherited, *own]))


def yaml_keys(group: str, option: str) -> list[str]:
    """The keys ``option``'s file in conf/ sets itself."""
    return [str(k) for k in option_yaml(group, option) if k != "defaults"]


def entries_of(group: str, option: str) -> list[str]:
    """The entries a list group's option file adds (``logger=csv``: its sink ``csv``)."""
    return list(option_yaml(group, option).get(LIST_GROUPS[group]) or {})


def entry_keys(group: str, name: str) -> tuple[str | None, list[str]]:
    """The option file of a list group that adds entry ``name``, and that entry's keys (none: a fork's)."""
    for option in group_options(group):
        node = option_yaml(group, option).get(LIST_GROUPS[group]) or {}
        if name in node:
            return option, [str(k) for k in node[name] or {}]
    return None, []


def option_files(group: str, value: Any) -> list[str]:
    """The options (files) of ``group`` that ``value`` of its naming key (``OPTION_KEY``) may mean: the file of
    that name, then those whose naming key has it (a fork's copy of adamw.yaml that kept ``name: adamw``, a fork's
    schedule named by its function's dotted path)."""
    named = [str(value)] if (CONF / group / f"{value}.yaml").is_file() else []
    return named + [
        option
        for option in group_options(group)
        if option not in named and option_yaml(group, option).get(OPTION_KEY[group]) == value
    ]


def group_options(group: str) -> list[str]:
    """The options of a config group: its files in conf/ that read as YAML mappings, by name (a fork's broken file
    that a run does not choose is not its concern; chosen, the composition names it: ``yaml_refusal``)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if _mapping(p) is not None)


def option_yaml(group: str, option: str) -> Any:
    """The mapping ``conf/<group>/<option>.yaml`` holds, read once while the file stays as it is."""
    path = CONF / group / f"{option}.yaml"
    node = _mapping(path)
    if node is None:
        raise ConfigError(f"{path}: not a YAML mapping of keys Hydra can read")
    return node


def _mapping(path: Path) -> Any:
    """``_mapping_at`` of the file as it is now: its mtime and size tell its versions apart ((-1, -1): none there)."""
    try:
        stat = path.stat()
    except OSError:
        return _mapping_at(path, -1, -1)
    return _mapping_at(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _mapping_at(path: Path, mtime_ns: int, size: int) -> Any:
    """The file's YAML mapping, or None when it is not one (unreadable, not YAML, a list)."""
    import yaml
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        node = OmegaConf.load(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException):
        return None
    if not isinstance(node, DictConfig):
        return None
    OmegaConf.set_readonly(node, True)  # shared by every reader: none may change it for the others
    return node


def yaml_refusal(e: Exception) -> ConfigError:
    """A config file that is not YAML (or not UTF-8 text), as the composition met it, in one line naming it."""
    if isinstance(e, UnicodeDecodeError):  # which file: the first of conf/ that does not decode
        for path in sorted(CONF.rglob("*.yaml")):
            try:
                path.read_text(encoding="utf-8")
            except UnicodeDecodeError as bad:
                return ConfigError(f"{path}: not UTF-8 text (byte {bad.object[bad.start]:#x} at {bad.start})")
        return ConfigError(f"a config file is not UTF-8 text ({first_line(e)})")
    mark = getattr(e, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}" if mark is not None else "a config file"
    return ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or first_line(e)})")


def not_mappings(group: str) -> str:
    """``; conf/<group>/<file> is not a mapping of keys`` for the group's files that are not (hidden as options)."""
    bad = [p for p in sorted((CONF / group).glob("*.yaml")) if _mapping(p) is None]
    return "".join(f"; {p} is not a YAML mapping of keys" for p in bad)


def top_keys(config_name: str) -> list[str]:
    """The keys of a config without groups (sample.yaml's), as its file defines them."""
    from omegaconf import OmegaConf

    return [k for k in OmegaConf.load(CONF / f"{config_name}.yaml") if k not in ("defaults", "hydra")]


def chosen_options(lines: list[str]) -> dict[str, str | None]:
    """The option of each group that override ``lines`` (``optim=sgd``) or else conf/config.yaml choose (None:
    none, the experiment's default)."""
    from omegaconf import OmegaConf

    chosen = {}
    for entry in OmegaConf.load(CONF / "config.yaml").get("defaults", []):
        if isinstance(entry, Mapping):
            chosen.update(
                {str(k): v if v is None else str(v) for k, v in entry.items() if not str(k).startswith("override ")}
            )
    for line in lines:
        key, sep, value = line.lstrip("+").partition("=")
        if sep and "." not in key and (CONF / key).is_dir():
            chosen[key] = value
    return chosen


def unknown_key(key: str, config_name: str = "config", chosen: Mapping[str, str | None] | None = None) -> ConfigError:
    """The one-line error for a key the config does not define, with the closest known keys (of the option
    ``chosen`` for its group first, as a key of another option would be refused too)."""
    group, _, leaf = key.partition(".")
    section = next((s for s in NAMED_SECTIONS if key.startswith(f"{s}.")), None)
    if config_name == "config" and section and key.count(".") == section.count(".") + 2:
        from data.corpus import COMMON_KEYS, SHARED_KEYS
        from data.mixture import SOURCE_KEYS

        entry, entry_key = key.rsplit(".", 1)  # data.sources.<name>.<key>
        if entry_key in SHARED_KEYS:
            return ConfigError(f"{key}: the sources of a mixture share it; set data.{entry_key} instead")
        own = sorted({"source", "weight", *COMMON_KEYS, *(k for keys in SOURCE_KEYS.values() for k in keys)})
        if entry_key in own:
            return ConfigError(f"{key} is not in the composed config (the entry does not set it); add it with +{key}=…")
        close = difflib.get_close_matches(entry_key, own, n=1, cutoff=0.6)
        if close:
            return ConfigError(f"{key} is not a key of a source; did you mean {entry}.{close[0]}?")
    entry = key.split(".")
    if config_name == "config" and group in LIST_GROUPS and len(entry) == 4 and entry[1] == LIST_GROUPS[group]:
        option, own = entry_keys(group, entry[2])  # a key of one sink or evaluation: that entry's own keys
        if entry[3] in own:
            return ConfigError(f"{key} is a key of {group}={option} only; choose it or drop the key")
        close = difflib.get_close_matches(entry[3], own, n=1, cutoff=0.6)
        if close:
            return ConfigError(
                f"{key} is not a key of {'.'.join(entry[:3])}; did you mean {close[0]}? it has {', '.join(own)}"
            )
        if option is not None:  # the entry's own keys, not the group's names that look like the key
            return ConfigError(f"{key} is not a key of {'.'.join(entry[:3])}; it has {', '.join(own)}")
    if config_name == "config" and group == "model" and leaf in known_keys("model", None):
        # a fork's new GPTConfig field that conf/model/base.yaml does not set yet: no preset has it
        return ConfigError(
            f"{key} is a field of GPTConfig that conf/model/base.yaml lacks; add it there with its default"
        )
    if config_name == "config" and group in GROUPS:
        options = group_options(group)
        owners = [o for o in options if leaf in known_keys(group, o)]
        if owners:
            chosen = " or ".join(f"{group}={o}" for o in owners)
            return ConfigError(
                f"{key} is a key of {chosen} only; choose {'it' if len(owners) == 1 else 'one'} or drop the key"
            )
        known = sorted({f"{group}.{k}" for o in options for k in known_keys(group, o)})
        where = group
        option = (chosen or {}).get(group)
        if option in options:
            own = [f"{group}.{k}" for k in known_keys(group, option)]
            # held against the keys past the group's name, which every one shares (logger.nosuch is no logger.notes)
            close = difflib.get_close_matches(leaf, [k.partition(".")[2] for k in own], n=1, cutoff=0.75)
            if close:
                return ConfigError(f"{key} is not a key of {group}; did you mean {group}.{close[0]}?")
            # another option's key would be refused beside this one: named with its option, never offered as is
            others = {f"{group}.{k}": o for o in options if o != option for k in known_keys(group, o)}
            others = {k: o for k, o in others.items() if k not in own}
            leaves = {k.split(".")[-1]: k for k in others}
            near = [
                f"{group}.{k}" for k in difflib.get_close_matches(leaf, [k.partition(".")[2] for k in others], 1, 0.75)
            ]
            near += [leaves[k] for k in difflib.get_close_matches(leaf.split(".")[-1], leaves, n=1, cutoff=0.75)]
            if near:
                return ConfigError(
                    f"{key} is not a key of {group}={option}; {group}={others[near[0]]} has {near[0]} (choose it, "
                    "or drop the key)"
                )
            return ConfigError(f"{key} is not a key of {group}; it has {', '.join(sorted(own))}")
    else:  # a key outside the groups: compare it with every key, and with every key's last part
        known = (
            top_keys(config_name)
            if config_name != "config"
            else [f"{g}.{k}" for g in GROUPS for k in known_keys(g, "default" if g == "trainer" else None)]
        )
        where = "this config"
    by_leaf = {k.split(".")[-1]: k for k in known}
    close = difflib.get_close_matches(key, known, n=2, cutoff=0.75)
    close += [by_leaf[k] for k in difflib.get_close_matches(key.split(".")[-1], by_leaf, n=2, cutoff=0.75)]
    close = list(dict.fromkeys(close))[:2]
    listed = ", ".join(known if where != "this config" or config_name != "config" else GROUPS)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; it has {listed}"
    return ConfigError(f"{key} is not a key of {where}{hint}")


def unknown_hydra_key(key: str, config_name: str = "config") -> ConfigError:
    """The one-line error for a ``hydra.*`` key Hydra does not define, with the keys of its nearest section."""
    from omegaconf import OmegaConf

    cfg = compose([], config_name, return_hydra_config=True)
    parts = key.split(".")
    depth = 1
    while depth < len(parts) - 1 and isinstance(OmegaConf.select(cfg, ".".join(parts[: depth + 1])), Mapping):
        depth += 1
    where = ".".join(parts[:depth])
    known = [f"{where}.{k}" for k in OmegaConf.select(cfg, where)]
    close = [f"{where}.{k}" for k in difflib.get_close_matches(parts[depth], OmegaConf.select(cfg, where), n=2)]
    hint = f"did you mean {' or '.join(close)}?" if close else f"it has {', '.join(known)}"
    if not known:  # an empty mapping (hydra.job.env_set) takes new keys with a +
        hint = f"add it with +{key}=…"
    return ConfigError(f"{key} is not a key of {where}; {hint}")


def resolved(cfg: Any) -> dict[str, Any]:
    """``cfg`` as plain values; an interpolation that cannot be resolved (a ``${…}`` in a prompt) is one line
    naming its key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "the config"
        hint = "" if "Environment variable" in str(e) else " (a literal ${ is written \\${)"
        raise ConfigError(f"{key}: {first_line(e)}{hint}") from None


def check_keys(cfg: Mapping[str, Any], config_name: str = "config") -> None:
    """Every key of the composed config is one that the chosen option of its group defines: a mistyped key, one
    appended with ``+`` or one of another option of the group would otherwise be carried along and ignored."""
    if config_name != "config":
        extra = [k for k in cfg if k not in top_keys(config_name)]
        if extra:
            raise unknown_key(str(extra[0]), config_name)
        return
    for key in cfg:
        if key not in GROUPS:
            raise unknown_key(str(key))
    for group in GROUPS:
        if not isinstance(cfg.get(group), Mapping):
            options = ", ".join(group_options(group))
            if cfg.get(group) is None and group in LIST_GROUPS:  # logger=[], eval=[]
                none = " (logger=none: metrics.jsonl and the console alone)" if group == "logger" else ""
                raise ConfigError(group, f"one or more of {options}{none}", [])
            raise ConfigError(
                f"{group} must be chosen from conf/{group}/ ({options}), got {cfg.get(group)!r}{not_mappings(group)}"
            )
        if group in LIST_GROUPS:
            entries = cfg[group].get(LIST_GROUPS[group])
            if entries is not None and not isinstance(entries, Mapping):
                key = f"{group}.{LIST_GROUPS[group]}"
                raise ConfigError(f"{key} must map each name to its settings (or be null), got {entries!r}")
            chosen = list(entries or {})
            option = "+".join(chosen) or "none"
            if not chosen:  # logger=none, or a base chosen alone (logger=tracking): the files that add no entry
                chosen = [o for o in group_options(group) if not entries_of(group, o)]
            known = list(dict.fromkeys([LIST_GROUPS[group], *(k for o in chosen for k in known_keys(group, o))]))
        elif group in OPTION_KEY:  # the file the config came from: of those its name may mean, one that has its keys
            options = option_files(group, cfg[group].get(OPTION_KEY[group]))
            fits = [o for o in options if fits_option(cfg[group], group, o)]
            option = (fits or options or [None])[0]
            known = known_keys(group, option) if option else []
        else:
            option, known = "default", known_keys(group, "default")
        extra = unknown(cfg[group], known, group)
        if group in LIST_GROUPS:  # a fork's entry, from a file named otherwise, has no file to hold it against
            extra = [k for k in extra if not k.startswith(f"{LIST_GROUPS[group]}.")]
        if group == "model" and (CONF / "model" / "base.yaml").is_file():  # +model.<field> past base.yaml's line
            base = yaml_keys("model", "base")
            missing = [k for k in base if k not in cfg[group]]
            if missing:  # a preset that does not extend base.yaml: every later check would name a symptom
                raise ConfigError(
                    f"model lacks {', '.join(f'model.{k}' for k in missing[:3])}{' …' if len(missing) > 3 else ''}"
                    f" of conf/model/base.yaml{preset_hint()}: a preset starts with `defaults: [base, _self_]`"
                )
            lacking = [k for k in cfg[group] if k not in base and k not in extra]
            if lacking:
                raise unknown_key(f"model.{lacking[0]}")
        if not known or not extra:
            continue  # no file for this option: the check of its name or source says so
        files = [o for o in group_options("model") if extra[0] in yaml_keys("model", o)] if group == "model" else []
        if files:
            close = difflib.get_close_matches(extra[0], known, n=1, cutoff=0.75)
            if close:  # a preset's typo (n_layers), not a new key
                raise ConfigError(
                    f"model.{extra[0]} (conf/model/{files[0]}.yaml) is not a key of model; did you mean {close[0]}?"
                )
            raise ConfigError(  # a fork's new key written in conf/model/ only: its code reads GPTConfig's fields
                f"model.{extra[0]} is in conf/model/ but not a field of GPTConfig (model/gpt.py): a model key is "
                "both (docs/extending.md)"
            )
        owners = [o for o in group_options(group) if extra[0] in known_keys(group, o)]
        if owners:
            raise ConfigError(
                f"{group}.{extra[0]} is a key of {' or '.join(f'{group}={o}' for o in owners)}, not of "
                f"{group}={option} (which has {', '.join(known)})"
            )
        raise unknown_key(f"{group}.{extra[0]}", chosen={group: option})


def preset_hint() -> str:
    """The presets in conf/model/ that do not extend base.yaml, named for the error that they lack its keys."""
    alone = [
        o for o in group_options("model") if o != "base" and "base" not in str(option_yaml("model", o).get("defaults"))
    ]
    return f" ({', '.join(f'conf/model/{o}.yaml' for o in alone)} does not extend it)" if alone else ""


def fits_option(node: Mapping[str, Any], group: str, option: str) -> bool:
    """Whether ``node`` may have come from ``option``'s file: it builds what the file names and has no key the
    file does not define."""
    target = option_yaml(group, option).get("_target_")
    return target in (None, node.get("_target_")) and not unknown(node, known_keys(group, option), group)


def unknown(node: Mapping[str, Any], known: list[str], group: str) -> list[str]:
    """The keys of ``node`` (and of its sections, as ``section.key``) that are not in ``known``."""
    extra = [k for k in node if k not in known]
    return extra + [
        f"{k}.{sub}"
        for k, v in node.items()
        if isinstance(v, Mapping) and f"{k}." in " ".join(known) and f"{group}.{k}" not in NAMED_SECTIONS
        for sub in v
        if f"{k}.{sub}" not in known
    ]


# Hydra's command-line flags that take a value (``--cfg job``): the value is not an override.
FLAGS_WITH_VALUES = (
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--info",
    "--experimental-rerun",
)


INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")  # --info's optional value


def split_flags(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(Hydra's flags with the values they take, the overrides, ``--info`` given without one), as its argparse
    reads ``argv``: the last must follow the overrides, or argparse would take the first for its value."""
    flags, overrides, bare, args = [], [], [], iter(argv)
    for arg in args:
        if not arg.startswith("-"):
            overrides.append(arg)
        elif arg in ("--info", "-i"):  # its value is optional: an override after it is none
            value = next(args, None)
            if value in INFO_TOPICS:
                flags += [arg, value]
            else:
                bare.append(arg)
                overrides += [] if value is None else [value]
        else:
            flags.append(arg)
            if arg in FLAGS_WITH_VALUES and (value := next(args, None)) is not None:
                flags.append(value)
    return flags, overrides, bare


MAX_SWEEP_VALUES_CHECKED = 64  # of each swept key, before Hydra runs (each costs one composition)
MAX_SWEEP_JOBS_CHECKED = 64  # a larger sweep is not checked whole before it starts: each job checks its own


MODE_FLAGS = {"-m": "-m", "--multirun": "-m", "-c": "--cfg", "--cfg": "--cfg", "-i": "--info", "--info": "--info"}


def check_overrides(overrides: list[str], config_name: str = "config") -> None:
    """Compose ``overrides`` as Hydra will (a sweep's first value for each swept key, then each other value in
    turn), and turn what Hydra refuses — a mistyped key, an unknown option, ``hydra.*``'s included — into one line
    with the closest known names; entry points call this before handing the command line to Hydra."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if config_name != "config" and {"-m", "--multirun"} & set(overrides):  # Hydra would write multirun/ here
        raise ConfigError(f"-m: a sweep is train.py's; {config_name}.py runs once (give each value its own command)")
    modes = list(dict.fromkeys(MODE_FLAGS[a] for a in overrides if a in MODE_FLAGS))
    if len(modes) > 1:  # Hydra's traceback: "Only one of --run, --multirun, --cfg, --info ..."
        raise ConfigError(f"{' and '.join(modes)}: give one of them (--cfg job prints a single run's config)")
    given = split_flags(overrides)[1]
    try:
        parsed = OverridesParser.create().parse_overrides(given)
    except HydraException as e:
        message = " ".join(str(e).split()).split(" See https://hydra.cc")[0]
        override = getattr(e, "override", None)
        evaluating = re.search(r"while evaluating '.*': (.*)$", message)
        if override and evaluating:  # a sweep function given arguments it does not take: choice(), range()
            message = f"{override}: {evaluating.group(1)}"
        elif override:  # which of them, and the usual cause: a value with spaces, brackets or quotes left bare
            key = override.split("=")[0]
            message = f"{key}: cannot parse {override!r} ({message}); quote such a value: \"{key}='…'\""
        raise ConfigError(message) from None

    def values(o) -> list[str] | None:  # a sweep's values; None for one the sweeper expands (glob, interval)
        try:
            return list(itertools.islice(o.sweep_string_iterator(), MAX_SWEEP_VALUES_CHECKED))
        except Exception:
            return None

    swept = {id(o): values(o) for o in parsed if o.is_sweep_override()}
    if intervals := [o for o in parsed if o.is_interval_sweep()]:  # Hydra's basic sweeper ends in a traceback
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        try:
            sweeper = str(compose(fixed, config_name, return_hydra_config=True).hydra.sweeper._target_)
        except Exception:  # a config Hydra refuses is judged below
            sweeper = ""
        if sweeper.endswith(".BasicSweeper"):
            raise ConfigError(
                f"{intervals[0].input_line}: interval() is a range a sampling sweeper draws from (Optuna, "
                "Nevergrad: hydra/sweeper=…); Hydra's basic sweeper takes a list, range() or choice()"
            )
    if empty := [o for o in parsed if swept.get(id(o)) == []]:  # Hydra would write multirun.yaml, then run nothing
        raise ConfigError(f"{empty[0].input_line}: the sweep has no jobs: each swept key needs one value at least")
    expanded = [o for o in parsed if swept.get(id(o), []) is None]  # Hydra's to judge
    for o in expanded:  # a glob names no options but a group's: Hydra would write multirun.yaml, then run nothing
        group = o.get_key_element().lstrip("+~").partition("@")[0]  # model@foo: the group model, elsewhere
        if isinstance(o.value(), Glob) and not group.startswith("hydra"):  # Hydra's own groups are Hydra's to judge
            if not (CONF / group).is_dir():
                raise ConfigError(f"{o.input_line}: glob() matches a config group's options; {group} is a setting")
            if not o.value().filter(group_options(group)):
                options = ", ".join(group_options(group))
                raise ConfigError(f"{o.input_line}: the sweep has no jobs: the glob matches none of {options}")
    if any((CONF / o.get_key_element().lstrip("+~")).is_dir() for o in expanded):
        return  # which option of a group each job takes is the sweeper's to say: its keys cannot be held to one
    parsed = [o for o in parsed if o not in expanded]
    first = [f"{o.get_key_element()}={swept[id(o)][0]}" if id(o) in swept else o.input_line for o in parsed]
    for o in parsed:  # a group takes an option's name: Hydra answers model=1 or model=null with a traceback
        group = o.get_key_element().lstrip("+~")
        if (CONF / group).is_dir() and not (
            o.is_delete() or o.is_sweep_override() or isinstance(o.value(), (str, list))
        ):
            options = ", ".join(group_options(group))
            defaults = chosen_options([])
            if o.value() is None and group in defaults and defaults[group] is None:  # experiment: none by default
                raise ConfigError(f"{o.input_line}: leave {group} out to choose none (or drop one with ~{group})")
            raise ConfigError(f"{o.input_line} is not an option of {group}; it has {options}")
    for o in parsed:
        if o.is_delete():
            check_deletion(o.get_key_element().lstrip("~"), o.input_line)
    ours = [not o.get_key_element().lstrip("+~").startswith("hydra") for o in parsed]
    plain = [line for line, mine in zip(first, ours, strict=True) if mine]
    try:
        compose(plain, config_name)
    except (HydraException, OmegaConfBaseException) as e:
        raise composition_error(e, config_name, plain) from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:  # a file the composition reads, a fork's broken one
        raise yaml_refusal(e) from None
    # the first job's config with Hydra's own settings, which several checks below read: composed once
    with_hydra = functools.cache(lambda: compose(first, config_name, return_hydra_config=True))
    sweeps = [o for o, mine in zip(parsed, ours, strict=True) if mine and o.is_sweep_override()]
    if sweeps and not {"-m", "--multirun"} & set(overrides) and not multirun_config(with_hydra):
        raise ConfigError(  # Hydra's answer is five lines
            f"{sweeps[0].input_line}: several values are a sweep; run it with -m (a list is written [a,b], a text "
            "holding commas 'a,b')"
        )
    for i, o in enumerate(parsed):  # each other value of a sweep, the rest at their first: linear, not every job
        if not (ours[i] and o.is_sweep_override()):
            continue
        for value in swept[id(o)][1:]:
            lines = [f"{o.get_key_element()}={value}" if j == i else line for j, line in enumerate(first) if ours[j]]
            try:
                compose(lines, config_name)
            except (HydraException, OmegaConfBaseException) as e:
                raise composition_error(e, config_name, lines) from None
            except (yaml.YAMLError, UnicodeDecodeError) as e:
                raise yaml_refusal(e) from None
    if len(plain) != len(first):
        try:  # Hydra's own keys, checked apart: only a mistyped key or option is reported, the rest Hydra's to judge
            with_hydra()
        except Exception as e:
            error = composition_error(e, config_name)
            if error.args[0].lstrip("+").startswith("hydra"):
                raise error from None
    if sweeps and config_name == "config":
        check_some_job(parsed, ours, swept, with_hydra)
    check_folder_names(with_hydra, bool({"-m", "--multirun"} & set(overrides)))


def check_folder_names(with_hydra: Callable[[], Any], multirun: bool) -> None:
    """A run's folder (a sweep job's, its first) whose name is longer than the file system takes is refused here:
    Hydra makes it before any code of ours runs, and answers with a traceback (a long ``override_dirname``)."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    try:
        hydra = with_hydra().hydra
        sweep = multirun or hydra.mode == RunMode.MULTIRUN
        folder = Path(hydra.sweep.dir if sweep else hydra.run.dir)
    except Exception:  # Hydra's own settings, Hydra's to judge
        return
    subdir: tuple[str, ...] = ()
    if sweep:
        with contextlib.suppress(Exception):  # a subdir Hydra's launcher fills in another way: not judged here
            if OmegaConf.is_missing(hydra.job, "num"):
                hydra.job.num = 0  # the first job's, as the launcher sets it (the default subdir is the number)
            subdir = Path(str(hydra.sweep.subdir)).parts
    folder = folder.joinpath(*subdir)
    try:
        limit = os.pathconf(next(p for p in folder.parents if p.is_dir()), "PC_NAME_MAX")
    except (OSError, ValueError, StopIteration):  # a name too long to look at, or no limit to read
        limit = 255
    for part in folder.parts:
        if len(os.fsencode(part)) > limit:
            key = "hydra.sweep.subdir" if part in subdir else "hydra.sweep.dir" if sweep else "hydra.run.dir"
            raise ConfigError(
                f"{key}: a folder name of {len(os.fsencode(part))} bytes ({part[:40]}…); the file system takes "
                f"{limit} at most: give a shorter one"
            )


def check_some_job(parsed: list, ours: list[bool], swept: dict, with_hydra: Callable[[], Any]) -> None:
    """A sweep whose every job the config checks would refuse is refused as a single run is, before Hydra writes
    its folders; one job that passes lets the sweep run, each refused job named on stderr before the first starts
    (a typo in job 7 need not wait for jobs 0 to 6), then reported in its turn."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        hydra = with_hydra().hydra
    except Exception:  # Hydra's own settings, Hydra's to judge
        return
    if hydra.sweeper.get("params") or not str(hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        return  # jobs the sweeper expands from its own settings: not these
    axes = [
        [f"{o.get_key_element()}={v}" for v in swept[id(o)]] if o.is_sweep_override() else [o.input_line]
        for o, mine in zip(parsed, ours, strict=True)
        if mine
    ]
    jobs = list(itertools.islice(itertools.product(*axes), MAX_SWEEP_JOBS_CHECKED + 1))
    if len(jobs) > MAX_SWEEP_JOBS_CHECKED:
        return
    refusals: dict[int, Exception] = {}
    for num, job in enumerate(jobs):  # numbered as Hydra's basic sweeper numbers them: the product, in order
        try:
            check_config(compose(list(job), "config"))
        except USER_ERRORS as e:
            refusals[num] = e
        except (HydraException, OmegaConfBaseException) as e:  # a combination of values that does not compose
            refusals[num] = composition_error(e, "config", list(job))
    if len(refusals) == len(jobs):
        raise refusals[0]
    from training.secrets import redact_text

    sweeps = [i for i, axis in enumerate(axes) if len(axis) > 1]
    for num, e in refusals.items():
        name = ",".join(jobs[num][i] for i in sweeps)
        print(redact_text(f"warning: job {num} ({name}) will be refused: {e}"), file=sys.stderr)


def multirun_config(with_hydra: Callable[[], Any]) -> bool:
    """Whether the config ``with_hydra`` composes runs as a sweep without -m (an experiment's ``hydra.mode``)."""
    from hydra.types import RunMode

    try:
        return with_hydra().hydra.mode == RunMode.MULTIRUN
    except Exception:  # Hydra's own keys, judged apart below
        return True


def check_deletion(key: str, line: str) -> None:
    """``~key`` may drop a group (``~experiment``) or a named entry (``~data.sources.docs``, a sink, an evaluation);
    a setting it deleted would read as its code's default, which need not be conf/'s (warmup 0, not 0.1)."""
    sections = [*NAMED_SECTIONS, *(f"{g}.{s}" for g, s in LIST_GROUPS.items())]
    if "." not in key or key.partition(".")[0] == "hydra" or key.rpartition(".")[0] in sections:
        return
    raise ConfigError(f"{line}: a setting cannot be deleted (its code's default need not be conf/'s); set it: {key}=…")


def composition_error(e: Exception, config_name: str, lines: list[str] = ()) -> ConfigError:
    """What Hydra's composition refused, in one line: an unknown key or option with the closest known names."""
    message = " ".join(str(e).split())
    present = re.search(r"An item is already at '([^']+)'", message)
    if present:
        return ConfigError(f"+{present.group(1)}: the config already has {present.group(1)}; set it without the +")
    key = re.search(r"Could not (?:override|append to config|delete from config)\W+'?([\w.]+)", message)
    if key:
        return (
            unknown_hydra_key(key.group(1), config_name)
            if key.group(1).startswith("hydra.")
            else unknown_key(
                key.group(1), config_name, chosen_options(list(lines)) if config_name == "config" else None
            )
        )
    # "find" for group=option, "load" for an option in a list (logger=[csv,wandd])
    option = re.search(r"Could not (?:find|load) '([\w/]+)/([^'/]+)'", message)
    listed = re.search(r"Available options in '[^']+': (.*?) Config search path", message)
    if option and (listed or not option.group(1).startswith("hydra/")):  # Hydra's groups: Hydra knows the options
        group, name = option.groups()
        options = listed.group(1).split() if group.startswith("hydra/") else group_options(group)
        close = difflib.get_close_matches(name, options, n=1)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        return ConfigError(f"{group}={name} is not an option of {group}; {hint}it has {', '.join(options)}")
    merging = re.match(r"Error merging override (\S+)", message)
    if merging and e.__cause__ is not None:  # a value of the wrong type for a typed key (hydra.job.chdir=maybe)
        return ConfigError(f"{merging.group(1)}: {first_line(e.__cause__)}")
    return ConfigError(message.split(" Config search path:")[0])


def check_overrides_or_exit(argv: list[str], config_name: str = "config") -> None:
    """An entry point's first step: an override Hydra would refuse in a multi-line report (a mistyped key, an
    unknown option) ends the process with one ``error:`` line and exit code 2."""
    try:
        check_overrides(argv, config_name)
    except USER_ERRORS as e:
        if int(os.environ.get("RANK", 0)) == 0:  # under torchrun every rank refuses alike: rank 0 says it
            print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def positive_int(section: Mapping[str, Any], key: str, prefix: str, minimum: int = 1) -> int:
    v = section.get(key)
    if not is_int(v) or v < minimum:
        expected = f"an integer ≥ {minimum}" if minimum != 1 else "an integer > 0"
        raise ConfigError(f"{prefix}.{key}", integer_expected(expected, v), v)
    return v


def check_schedule_option(schedule: Mapping[str, Any]) -> None:
    """``schedule.name=polynomial`` beside another option's file keeps that file's keys and leaves polynomial's own
    (its ``power``) at the code's default, not conf/'s: a schedule of conf/ is chosen by its option."""

    name = schedule.get("name")
    path = CONF / "schedule" / f"{name}.yaml"
    if not isinstance(name, str) or "/" in name or not path.is_file():
        return  # a fork's dotted path, or a name the schedule check refuses
    missing = [str(k) for k in option_yaml("schedule", name) if k != "defaults" and k not in schedule]
    if missing:
        raise ConfigError(
            f"schedule.name={name}: choose it with schedule={name}, whose file sets "
            f"{', '.join(f'schedule.{k}' for k in missing)}; schedule.name alone leaves them at the code's defaults"
        )


MAX_SPIKE_WINDOW = 10**6  # the recent losses a spike is judged against: a window, not the run
MAX_SAMPLE_TOKENS = 100_000  # the end-of-run sample: a glance at the model, not a book


def check_seconds(value: Any, key: str, nullable: bool = False) -> None:
    """A wait or deadline in seconds: a number in (0, 30 days] (null too, where ``nullable``: no limit)."""
    if nullable and value is None:
        return
    if not is_number(value) or not 0 < value <= MAX_HANG_TIMEOUT_S:
        allowed = f"a number of seconds in (0, {MAX_HANG_TIMEOUT_S}]"
        raise ConfigError(key, f"null or {allowed}" if nullable else allowed, value)


def one_of(section: Mapping[str, Any], key: str, prefix: str, allowed: tuple) -> Any:
    v = section.get(key)
    if v not in allowed or isinstance(v, bool) != any(isinstance(a, bool) and a == v for a in allowed):
        raise ConfigError(f"{prefix}.{key}", f"one of {', '.join(str(a).lower() for a in allowed)}", v)
    return v


def budget_key(t: Mapping[str, Any]) -> str:
    """Which of ``trainer.max_steps | max_tokens | max_time`` sets T; exactly one may be set."""
    given = [k for k in BUDGET_KEYS if t.get(k) is not None]
    if len(given) != 1:
        got = ", ".join(f"trainer.{k}={t.get(k)}" for k in given) or "none"
        raise ConfigError(f"trainer.max_steps, trainer.max_tokens, trainer.max_time: set exactly one, got {got}")
    key, value = given[0], t[given[0]]
    if key == "max_time" and (not is_number(value) or not 0 < value <= MAX_TIME_S):
        raise ConfigError("trainer.max_time", "a number of seconds > 0, at most 10**9 (31 years)", value)
    if key != "max_time" and (not is_int(value) or value <= 0):
        raise ConfigError(f"trainer.{key}", integer_expected("an integer > 0", value), value)
    if key == "max_steps":
        check_total_steps(value, "trainer.max_steps")
    if key == "max_tokens" and value >= 2**63:  # the token count is an int64
        raise ConfigError("trainer.max_tokens", "an integer < 2**63", value)
    return key


TEMPLATE_OPTIMIZERS = ("training.optim.adamw", "training.optim.muon")


def check_optim(o: Mapping[str, Any]) -> None:
    """The optim group: a ``name`` and a peak ``lr`` (every optimizer's), and the keys of the template's optimizers
    (a fork's own builder judges its keys: its eps or betas may mean something else, Adafactor's a pair)."""
    if not isinstance(o.get("name"), str) or not o["name"]:
        raise ConfigError("optim.name", "the optimizer's name (a checkpoint records it)", o.get("name"))
    lr = o.get("lr")
    if not is_number(lr) or lr <= 0:
        raise ConfigError("optim.lr", "a number > 0", lr)
    if o.get("_target_") not in TEMPLATE_OPTIMIZERS:
        return
    betas = o.get("betas", [0.9, 0.98])
    if not isinstance(betas, (list, tuple)) or len(betas) != 2 or not all(is_number(b) and 0 <= b < 1 for b in betas):
        raise ConfigError("optim.betas", "two numbers in [0, 1), e.g. [0.9, 0.98]", betas)
    if "eps" in o and (not is_number(o["eps"]) or o["eps"] <= 0):
        raise ConfigError("optim.eps", "a number > 0", o["eps"])
    if "weight_decay" in o and (not is_number(o["weight_decay"]) or o["weight_decay"] < 0):
        raise ConfigError("optim.weight_decay", "a number ≥ 0", o["weight_decay"])
    if "fused" in o:
        one_of(o, "fused", "optim", ("auto", True, False))
    if "muon" in o:
        m = o.get("muon") or {}
        if not isinstance(m, Mapping):
            raise ConfigError("optim.muon", "the Muon settings (a mapping: lr, momentum, …)", m)
        if not is_number(m.get("lr")) or m["lr"] <= 0:
            raise ConfigError("optim.muon.lr", "a number > 0", m.get("lr"))
        if not is_number(m.get("momentum")) or not 0 <= m["momentum"] < 1:
            raise ConfigError("optim.muon.momentum", "a number in [0, 1)", m.get("momentum"))
        one_of(m, "nesterov", "optim.muon", (True, False))
        positive_int(m, "ns_steps", "optim.muon")
        if not is_number(m.get("weight_decay")) or m["weight_decay"] < 0:
            raise ConfigError("optim.muon.weight_decay", "a number ≥ 0", m.get("weight_decay"))
        one_of(m, "adjust_lr_fn", "optim.muon", ADJUST_LR_FNS)
        one_of(m, "ns_dtype", "optim.muon", NS_DTYPE_CHOICES)


def check_components(cfg: Mapping[str, Any]) -> None:
    """What the plug points name (``training.components``) imports and takes its YAML keys; each sink checks its
    ``logger.*`` settings."""
    from training.components import TARGET, check_call, find, own_keys

    optim = cfg["optim"]
    check_call(find(optim, "optim"), "optim", optim[TARGET], None, None, **own_keys(optim))
    for group, section in LIST_GROUPS.items():
        entries = cfg[group].get(section) or {}
        if not isinstance(entries, Mapping):
            raise ConfigError(f"{group}.{section}", "a mapping of names to what each builds", entries)
        for name, node in entries.items():
            where = f"{group}.{section}.{name}"
            target = find(node, where)
            check_call(target, where, node[TARGET], None, **own_keys(node))
            try:  # a fork's check that raises ValueError (its refusal) or anything else (its bug): one line
                if group == "logger" and hasattr(target, "check"):
                    target.check(cfg["logger"])
                elif group == "eval" and hasattr(target, "check"):
                    target.check(own_keys(node), where)
            except ConfigError:
                raise
            except Exception as e:
                refusal = isinstance(e, (ValueError, TypeError))
                raise ConfigError(f"{where}: {'' if refusal else f'{type(e).__name__}: '}{first_line(e)}") from None


def check_stop_at(stop_at: Any, total_steps: int | None, what: str = "trainer.max_steps") -> None:
    """``trainer.stop_at`` must stop before T (checked again once a budget has fixed T: ``what`` names it)."""
    if stop_at is None:
        return
    if not is_int(stop_at) or stop_at < 1 or (total_steps is not None and stop_at >= total_steps):
        bound = f"{what} = {total_steps}" if total_steps is not None else "T"
        raise ConfigError("trainer.stop_at", f"null or an integer in [1, {bound})", stop_at)


def check_trainer(t: Mapping[str, Any]) -> None:
    budget_key(t)
    for key in ("batch_size", "grad_accum_steps", "eval_batches", "log_every"):
        positive_int(t, key, "trainer")
    for key in ("eval_every", "ckpt_every", "sample_tokens"):
        positive_int(t, key, "trainer", minimum=0)
    if t["sample_tokens"] > MAX_SAMPLE_TOKENS:  # the run's ending, which a signal waits for
        raise ConfigError("trainer.sample_tokens", f"an integer in [0, {MAX_SAMPLE_TOKENS:,}]", t["sample_tokens"])
    positive_int(t, "keep_checkpoints", "trainer", minimum=2 if t.get("ckpt_every") else 1)
    # numpy's SeedSequence takes no negative entropy; torch's generators nothing past 64 bits (seed + rank)
    if not is_int(t.get("seed")) or not 0 <= t["seed"] < 2**63:
        raise ConfigError("trainer.seed", "an integer in [0, 2**63)", t.get("seed"))
    if not isinstance(t.get("sample_prompt"), str):  # Hydra reads sample_prompt=123 as a number
        raise ConfigError(
            "trainer.sample_prompt",
            "a string (quote a number: 'trainer.sample_prompt=\"123\"')",
            t.get("sample_prompt"),
        )
    clip = t.get("grad_clip")
    if not is_number(clip) or clip < 0:
        raise ConfigError("trainer.grad_clip", "a number ≥ 0 (0 = no clipping)", clip)
    check_stop_at(t.get("stop_at"), t.get("max_steps"))
    one_of(t, "device", "trainer", DEVICES)
    one_of(t, "precision", "trainer", PRECISIONS)
    one_of(t, "compile", "trainer", COMPILE)
    one_of(t, "strategy", "trainer", STRATEGIES)
    if t.get("global_batch_tokens") is not None:
        positive_int(t, "global_batch_tokens", "trainer")
    one_of(t, "nonfinite", "trainer", NONFINITE)
    check_seconds(t.get("hang_timeout"), "trainer.hang_timeout", nullable=True)
    check_seconds(t.get("collective_timeout"), "trainer.collective_timeout")
    if t.get("on_spike") not in (None, "rollback"):
        raise ConfigError("trainer.on_spike", "null or rollback", t.get("on_spike"))
    if not is_number(t.get("spike_factor")) or t["spike_factor"] <= 1:
        raise ConfigError("trainer.spike_factor", "a number > 1", t.get("spike_factor"))
    if positive_int(t, "spike_window", "trainer") > MAX_SPIKE_WINDOW:
        raise ConfigError("trainer.spike_window", f"an integer in [1, {MAX_SPIKE_WINDOW:,}]", t["spike_window"])
    if t.get("on_spike") == "rollback" and not t.get("ckpt_every"):
        raise ConfigError(
            "trainer.ckpt_every",
            "an integer > 0 with trainer.on_spike=rollback (a checkpoint to go back to)",
            t.get("ckpt_every"),
        )
    resume = t.get("resume")
    if resume is not False and resume != "auto" and not (isinstance(resume, str) and resume):
        raise ConfigError("trainer.resume", "auto, false or a checkpoint or run directory", resume)
    change = t.get("allow_schedule_change")
    if not (isinstance(change, bool) or change == "branch"):
        raise ConfigError("trainer.allow_schedule_change", "true, false or branch", t.get("allow_schedule_change"))


def grad_accum_steps(t: Mapping[str, Any], block_size: int, world_size: int) -> int:
    """Micro-batches per update: ``trainer.grad_accum_steps``, or derived from ``trainer.global_batch_tokens`` so
    the global batch stays the same whatever the number of ranks."""
    target = t.get("global_batch_tokens")
    if target is None:
        return int(t["grad_accum_steps"])
    per_micro_step = t["batch_size"] * block_size * world_size
    if target % per_micro_step:
        raise ConfigError(
            "trainer.global_batch_tokens",
            f"a multiple of batch_size × block_size × ranks = {t['batch_size']} × {block_size} × {world_size} "
            f"= {per_micro_step}",
            target,
        )
    return target // per_micro_step


def check_data(d: Mapping[str, Any], prefix: str = "data") -> None:
    """The data group's values; a mixture's sources each in turn, as ``data.sources.<name>``; a fork's source
    (``data._target_``) imports and takes its own keys."""
    if d.get("_target_") is None:
        from training.components import near_target

        if typo := near_target(d):  # else data.source is blamed: a fork's source file names none
            raise ConfigError(f"{prefix}.{typo}: did you mean {prefix}._target_, the dotted path of the source?")
        one_of(d, "source", prefix, SOURCES)
    else:
        from data.corpus import source_keys
        from training.components import check_call, find

        check_call(find(d, prefix), prefix, d["_target_"], None, **source_keys(d))
    # Before the sources (which inherit it); anything but a path would name a folder after its Python repr.
    # "" is null: GPT_DATA_CACHE exported empty (the presets' cache_dir reads it) means the default folder
    if d.get("cache_dir") not in (None, "") and not is_text(d["cache_dir"]):
        raise ConfigError(f"{prefix}.cache_dir", "null or a folder path", d["cache_dir"])
    if d.get("source") == "mixture":
        from data.mixture import source_configs

        for name, (_, settings) in source_configs(d).items():
            check_data(settings, f"data.sources.{name}")
    vf = d.get("val_fraction", 0.05)
    if not is_number(vf) or not 0.0 < vf < 1.0:
        raise ConfigError(f"{prefix}.val_fraction", "a fraction in (0, 1)", vf)
    if not d.get("tokenizer"):
        from data.cache import special_tokens
        from data.tokenizer import check_vocab_size

        check_vocab_size(d.get("vocab_size"), special_tokens(d))
    for key in ("max_documents", "max_bytes", "tokenizer_train_bytes"):
        if d.get(key) is not None:
            positive_int(d, key, prefix)
    for key, what in (("special_tokens", "tokens, the first separating documents"), ("exclude", "directory names")):
        value = d.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) and v for v in value)):
            raise ConfigError(f"{prefix}.{key}", f"a list of {what} ('{prefix}.{key}=[a,b]')", value)
        if value is not None and len(set(value)) < len(value):
            raise ConfigError(f"{prefix}.{key}", f"a list of distinct {what}", value)
    if not d.get("tokenizer"):  # one character of the trained tokenizer's byte symbols: each in the text becomes it
        from data.tokenizer import BYTE_LEVEL_CHARS

        if single := [t for t in d.get("special_tokens") or () if isinstance(t, str) and t in BYTE_LEVEL_CHARS]:
            why = f"{single[0]!r} is a byte's symbol, a token of plain text: mark it, e.g. '<|{single[0]}|>'"
            raise ConfigError(f"{prefix}.special_tokens", f"tokens apart from plain text ({why})", d["special_tokens"])
    one_of(d, "on_decode_error", prefix, DECODE_POLICIES)
    one_of(d, "document_mask", prefix, (True, False))
    if "streaming" in d:
        one_of(d, "streaming", prefix, (True, False))
    for key in ("text_column", "split", "val_split", "config_name", "revision"):
        if d.get(key) is not None and not is_text(d[key]):
            raise ConfigError(
                f"{prefix}.{key}", f"a non-empty string (quote a number: '{prefix}.{key}=\"2024\"')", d[key]
            )
    if d.get("source") == "text_files" and not is_paths(d.get("path")):
        raise ConfigError(
            f"{prefix}.path", "a file, a directory or a glob for data=text_files, or a list", d.get("path")
        )
    if d.get("source") == "hub" and not is_text(d.get("name")):
        raise ConfigError(f"{prefix}.name", "a Hugging Face dataset name for a hub corpus", d.get("name"))
    files = d.get("data_files")
    if files is not None and not (is_paths(files) or isinstance(files, Mapping) and all(map(is_paths, files.values()))):
        raise ConfigError(f"{prefix}.data_files", "files, a glob or a list of them, or {split: those}", files)
    if d.get("val_split") is not None and d["val_split"] == d.get("split", "train"):
        raise ConfigError(
            f"{prefix}.val_split", f"a split other than {prefix}.split (validating on training data)", d["val_split"]
        )


def is_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != "" and value != "???"


def is_paths(value: Any) -> bool:
    """A path or glob, or a non-empty list of them."""
    return is_text(value) or isinstance(value, list) and value != [] and all(map(is_text, value))


def check_config(cfg: Mapping[str, Any]) -> None:
    """Every check that needs nothing but the config: model, optim, trainer, data, schedule, and what the plug
    points (optim, logger, eval) name."""
    if not isinstance(cfg, dict):  # an OmegaConf DictConfig: check the plain, resolved values
        cfg = resolved(cfg)
    check_keys(cfg)
    check_model_config(cfg["model"])
    check_optim(cfg["optim"])
    check_trainer(cfg["trainer"])
    # under torchrun, against its ranks: before the token cache is built, not after
    grad_accum_steps(cfg["trainer"], cfg["model"]["block_size"], int(os.environ.get("WORLD_SIZE", 1)))
    check_data(cfg["data"])
    if cfg["model"].get("reset_positions") and not cfg["data"]["document_mask"]:
        raise ConfigError(
            "model.reset_positions",
            "false unless data.document_mask=true (positions restart at the documents the mask separates)",
            True,
        )
    check_components(cfg)
    muon = cfg["optim"]["name"] == "muon" or cfg["optim"].get("_target_") == "training.optim.muon"  # name: a label
    if muon and cfg["trainer"]["strategy"] == "fsdp":
        raise ConfigError(
            "trainer.strategy",
            "auto, single or ddp with optim=muon (Muon orthogonalises whole matrices, which FSDP shards across ranks)",
            "fsdp",
        )
    check_schedule_option(cfg["schedule"])
    # With a token or time budget T is known only later: check here what does not depend on it. A tabulated
    # schedule ends at its last knot, which a token budget must reach (checked once T is known) and time cannot.
    T = cfg["trainer"]["max_steps"] or PROVISIONAL_STEPS
    budget = budget_key(cfg["trainer"])
    if cfg["schedule"]["name"] == "tabulated" and budget != "max_steps":
        T = read_knots(cfg["schedule"].get("knots"))[-1][0]
        if budget == "max_time":
            raise ConfigError(
                f"trainer.max_time: schedule=tabulated ends at its last knot, update {T}, which a time budget "
                f"cannot promise to reach; set trainer.max_steps={T} and trainer.max_time=null instead"
            )
    schedule_from_config(cfg["schedule"], T, cfg["optim"]["lr"])
