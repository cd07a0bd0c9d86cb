"""The plug points: what a YAML file of conf/ names with ``_target_``, found and built.

Three groups name the code they build, each option with a ``_target_`` (a dotted path to a class or function):
``optim`` (one per run: ``optim._target_``), ``logger`` and ``eval`` (several per run: each option adds an entry
under ``logger.sinks`` or ``eval.evals``, keyed by the option's name); a fourth, ``data``, builds a fork's source
in the data layer (``data.corpus.plugged_corpus``), its keys checked here. A fork adds one with a Python file and a
YAML file, and edits nothing of the template:

    # conf/logger/steps_file.yaml                 # python train.py logger=[wandb,steps_file]
    sinks:
      steps_file:
        _target_: my_sinks.StepsFile              # my_sinks.py at the template's root, or any importable module
        path: steps.txt                           # its own keys: keyword arguments of the call

Each is called with its node's keys (``path=…``) and what the template passes at that plug point (its protocol:
``training.loggers.Sink``, ``training.optim``'s builders, ``training.evaluation.Evaluation``).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from scheduling.spec import first_line, missing_name
from training.config import LIST_GROUPS, USER_ERRORS, ConfigError, entry_keys

TARGET = "_target_"


def find(node: Mapping[str, Any], where: str) -> Callable:
    """The class or function ``node._target_`` names; a one-line error naming ``where`` when it does not import."""
    from hydra.utils import get_object

    path = node.get(TARGET) if isinstance(node, Mapping) else None
    group, entries, name = (where.split(".") + ["", ""])[:3]
    unbuilt = isinstance(node, Mapping) and TARGET not in node  # null where chosen; absent where only + made it
    option, keys = entry_keys(group, name) if unbuilt and LIST_GROUPS.get(group) == entries else (None, [])
    if option is not None and TARGET in keys:
        # keys added with + to an entry whose option file is not chosen: the entry is that file's
        raise ConfigError(f"{where} is an entry of {group}={option}, which is not chosen; choose it or drop its keys")
    if path is None and isinstance(node, Mapping) and (typo := near_target(node)):
        raise ConfigError(f"{where}.{typo}: did you mean {where}.{TARGET}, the dotted path of what to build?")
    if not isinstance(path, str) or not path:
        where_set = f" (conf/{group}/{option}.yaml's entry sets none)" if option is not None else ""
        raise ConfigError(f"{where}.{TARGET}", f"the dotted path of a class or function to build{where_set}", path)
    hydra_log = logging.getLogger("hydra.utils")  # it logs the failure in three lines: ours is the one line
    disabled, hydra_log.disabled = hydra_log.disabled, True
    try:
        found = get_object(path)
    except Exception as e:  # Hydra wraps the ImportError or AttributeError in a long message
        cause = e.__cause__ or e
        why = missing_name(path) or first_line(cause)
        raise ConfigError(f"{where}.{TARGET}: {path!r} cannot be imported ({why})") from None
    finally:
        hydra_log.disabled = disabled
    if not callable(found):
        raise ConfigError(f"{where}.{TARGET}", "a class or function", path)
    return found


def near_target(node: Mapping[str, Any]) -> str | None:
    """A key of ``node`` that reads as ``_target_`` mistyped (``_targt_``, ``target``, ``__target__``)."""
    keys = [k for k in node if isinstance(k, str) and k != TARGET]
    return next(iter(difflib.get_close_matches(TARGET, keys, n=1, cutoff=0.85)), None)  # not targets, target_lr


def own_keys(node: Mapping[str, Any]) -> dict[str, Any]:
    """A node's keys besides ``_target_``: the keyword arguments its target is called with."""
    return {k: v for k, v in node.items() if k != TARGET}


def build(node: Mapping[str, Any], where: str, /, *args: Any, **kwargs: Any) -> Any:
    """Call what ``node`` names with ``args``, its own keys and ``kwargs`` (plain values: resolve a DictConfig
    first). A keyword the target does not take is a one-line error naming ``where``."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    target, settings = find(node, where), own_keys(node)
    check_call(target, where, node[TARGET], *args, **settings, **kwargs)
    return target(*args, **settings, **kwargs)


def build_refusing(node: Mapping[str, Any], where: str, /, *args: Any, **kwargs: Any) -> Any:
    """``build``, where the target's refusal of its settings (``ValueError``, ``TypeError``, a file it cannot read:
    ``OSError``) is a one-line error naming ``where`` and the target."""
    try:
        return build(node, where, *args, **kwargs)
    except USER_ERRORS:  # bad input the target named itself (a DataError naming its file and line)
        raise
    except (ValueError, TypeError, OSError) as e:
        at = raised_in(e, find(node, where))  # a bug of the fork's own code looks the same: where it was raised
        raise ConfigError(
            f"{where}: {node[TARGET]} refused its settings ({type(e).__name__}: {first_line(e)}{at})"
        ) from None


def raised_in(error: BaseException, target: Callable) -> str:
    """``; raised at file.py:line``: the last line of ``target``'s own module that the error passed through."""
    import inspect
    import traceback

    try:
        source = inspect.getsourcefile(inspect.getmodule(target))
    except TypeError:  # a builtin
        return ""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == source]
    return f"; raised at {Path(source).name}:{frames[-1].lineno}" if frames else ""


def check_call(target: Callable, where: str, path: str, /, *args: Any, **kwargs: Any) -> None:
    """Whether ``target`` takes these arguments (a key its YAML node adds, or one it lacks); a one-line error."""
    import inspect

    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # no signature to read (a builtin): the call itself will say
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as e:
        why = unbound(signature, len(args), kwargs, where) or first_line(e)
        raise ConfigError(f"{where}: {path} does not take these settings ({why})") from None


def unbound(signature, n_args: int, settings: Mapping[str, Any], where: str) -> str | None:
    """Why ``settings`` do not fit ``signature`` after ``n_args`` positional arguments, by key: a key it does not
    take (with the parameter it may mean), one an argument of the plug point fills already, one it needs."""
    import inspect

    params = signature.parameters
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    filled, free = named[:n_args], named[n_args:]
    missing = [n for n in free if params[n].default is inspect.Parameter.empty and n not in settings]
    any_key = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in settings:
        if key in filled:  # torch.optim.SGD named directly: its lr gets the device
            return (
                f"its parameter {key} is filled already: it is called with the template's {n_args} argument(s) "
                "first, then its settings as keywords (docs/extending.md)"
            )
    for key in settings:
        if key not in free and not any_key:
            close = difflib.get_close_matches(key, missing or free, n=1)
            hint = f"did you mean {where}.{close[0]}?" if close else f"each key of {where} is passed to it"
            return f"it takes no {where}.{key}; {hint}"
    if missing:
        return f"it needs {where}.{missing[0]}, which is not set"
    return None
