"""The "did you mean" of ``train.py``: the settings a command line could have named, and the closest one to a typo.

Candidates are every key of the resolved base config (the experiment's YAML, so the model's and data's own
arguments in subclass mode are there: ``model.init_args.lr``) and every option of the subcommand's parser
(``trainer.max_epochs``). A misspelt leaf that exists elsewhere (``model.init_args.optimizer.init_args.lr``, where
the learning rate is ``model.init_args.lr``) is pointed at the setting with that leaf.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import yaml

from .run_folder import flatten_config

__all__ = ["setting_names", "closest_setting"]


def _base_arguments(args: Sequence[str]) -> list[str]:
    """The subcommand and the ``--config`` files of ``args`` (what the user typed after them is left out: it may be
    the typo)."""
    kept = [args[0]] if args and not args[0].startswith("-") else []
    for i, arg in enumerate(args):
        if arg in ("-c", "--config") and i + 1 < len(args):
            kept += [arg, args[i + 1]]
        elif arg.startswith("--config="):
            kept.append(arg)
    return kept


def setting_names(parser, args: Sequence[str]) -> list[str]:
    """Every dotted setting name the command line ``args`` could have given (empty if even the base fails)."""
    base = _base_arguments(args)
    subcommand = base[0] if base and not base[0].startswith("-") else None
    names: set[str] = set()
    try:
        config = parser.parse_args(base)
        dumped = yaml.safe_load(parser.dump(config, skip_validation=True)) or {}
    except Exception:  # only a suggestion: a base that does not parse gives none
        return []
    names.update(flatten_config(dumped.get(subcommand, {}) if subcommand else dumped))
    action = getattr(parser, "_subcommands_action", None)
    sub_parser = action._name_parser_map.get(subcommand) if action is not None and subcommand else parser
    for option in getattr(sub_parser, "_option_string_actions", {}):
        if option.startswith("--") and option not in ("--help", "--config", "--print_config"):
            names.add(option[2:])
    groups = {name.rsplit(".", 1)[0] for name in names if "." in name}  # "trainer" holds settings; it is not one
    return sorted(names - groups)


def closest_setting(given: str, names: Iterable[str]) -> str | None:
    """The setting ``given`` (``--trainer.max_epcohs=5`` or ``trainer.max_epcohs``) most likely meant, or ``None``."""
    key = given.lstrip("-").split("=", 1)[0]
    names = [n for n in names if n != key]
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [n for n in names if n.rsplit(".", 1)[-1] == leaf]
    if same_leaf:
        return difflib.get_close_matches(key, same_leaf, n=1, cutoff=0.0)[0]
    match = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    return match[0] if match else None
