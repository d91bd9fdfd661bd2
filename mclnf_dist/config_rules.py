"""Cross-field rules of the configs: what one field's type cannot say.

A rule is declared beside the config it concerns::

    @cross_field_rule(FimConfig)
    def clip_order(fim: FimConfig, prefix: str) -> str | None:
        if fim.w_min >= fim.w_max:
            return f"{prefix}w_min={fim.w_min:g} must be below {prefix}w_max={fim.w_max:g}"
        return None

and :func:`mclnf_dist.config.check_config` runs every rule of every node of the config tree
after that node's own fields, so YAML files, command lines, sweeps, recipes and configs built in
code all meet it before any work; a broken rule is one :class:`~mclnf_dist.errors.MclnfError`
line. The helpers below word the common problems the same way everywhere.
"""

import re
from collections.abc import Callable
from typing import Any

Rule = Callable[[Any, str], str | None]
"""``rule(config, prefix) -> problem``: one line naming the contradicting fields (each written
``f"{prefix}name"``) and what was expected, or None when they agree."""

RULES: dict[type, list[Rule]] = {}
"""Cross-field rules by the config class they concern (subclasses inherit them)."""


def cross_field_rule(cls: type) -> Callable[[Rule], Rule]:
    """Declare a :data:`Rule` of ``cls``, beside the config: :func:`check_config` runs it."""

    def register(rule: Rule) -> Rule:
        RULES.setdefault(cls, []).append(rule)
        return rule

    return register


def rule_problem(config: Any, prefix: str = "") -> str | None:
    """The first cross-field rule of ``config``'s class (or its bases) that it breaks."""
    for cls in type(config).__mro__:
        for rule in RULES.get(cls, ()):
            if problem := rule(config, prefix):
                return problem
    return None


SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def name_problem(where: str, name: str) -> str | None:
    """Why ``name`` cannot name a folder of the run (letters, digits, ``.``, ``_``, ``-``; not
    starting with ``.``, so no ``/``, ``..`` or hidden names), or None."""
    if SAFE_NAME.fullmatch(name):
        return None
    return (
        f"{where}={name!r} is not a safe name (expected letters, digits, '.', '_' or '-', "
        "not starting with '.')"
    )


def box_problem(where: str, box: Any) -> str | None:
    """Why a ``(low corner, high corner)`` box is inverted or empty (low >= high on an axis)."""
    if box is None:
        return None
    low, high = box
    for axis, lo, hi in zip("xyz", low, high, strict=False):
        if not lo < hi:
            return (
                f"{where} is empty or inverted on {axis}: low {lo:g} >= high {hi:g} "
                "(expected (low corner, high corner) with low < high on every axis)"
            )
    return None


def duplicates(values: Any) -> list:
    """The values that occur more than once, in order of first repetition."""
    seen, repeated = set(), []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return repeated
