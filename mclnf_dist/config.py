"""One config system: typed dataclasses, loadable from YAML, overridable from the command line.

``parse_config(Cls, argv, recipes=...)`` starts from the dataclass defaults or a named recipe
(``--recipe NAME``, :mod:`mclnf_dist.experiments.recipes`), applies an optional
``--config FILE.yaml`` (which may name a ``recipe:`` as its base), then lets ``tyro`` apply
command-line flags such as ``--meta.inner-steps 8``. The field docstrings are the ``--help``.

Fields declare what they accept once, in their type: a choice is a ``Literal[...]`` and a number
carries its range, ``Annotated[int, Range(ge=1)]``. tyro reads the same types to build the flags;
:func:`check_config` checks the whole tree after parsing (and :func:`merge` every value it
applies), so a bad value in YAML, on the command line, from a sweep or in a recipe stops the job
with one line such as ``meta.inner_steps must be >= 1, got 0`` before any work starts.

What one field's type cannot say (``fim.w_min`` above ``fim.w_max``, an inverted box) is a
*cross-field rule*: a function declared beside the config it concerns with
``@cross_field_rule(FimConfig)``, run by the same :func:`check_config` on every node of that type
(so YAML, flags, sweeps, recipes and configs built in code all meet it), returning one line that
names the fields and what was expected.
"""

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml

from mclnf_dist.config_rules import rule_problem
from mclnf_dist.errors import MclnfError

C = TypeVar("C")
Recipes = Mapping[str, Callable[[], Any]]


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric field accepts: finite, within the bounds given, or one of ``special``.

    ``special`` maps sentinel values to what they mean (``{-1: "auto"}``); they are allowed on top
    of the range and named in the error message.
    """

    ge: float | None = None
    """Lowest value allowed (inclusive)."""
    gt: float | None = None
    """Values must be above this (exclusive)."""
    le: float | None = None
    """Highest value allowed (inclusive)."""
    lt: float | None = None
    """Values must be below this (exclusive)."""
    special: tuple[tuple[float, str], ...] = ()
    """Sentinels allowed outside the bounds, with their meaning: ``((-1, "auto"),)``."""

    def problem(self, value: Any) -> str | None:
        """``"must be >= 1, got 0"`` when ``value`` is outside, else None."""
        if any(value == v for v, _ in self.special):
            return None
        inside = math.isfinite(value) and not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )
        return None if inside else f"must be {self.describe()}, got {value!r}"

    def describe(self) -> str:
        bounds = [
            f"{op} {bound:g}"
            for op, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            if bound is not None
        ]
        text = " and ".join(bounds) or "a finite number"
        if self.special:
            text += " (or " + ", ".join(f"{v:g}: {meaning}" for v, meaning in self.special) + ")"
        return text


PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
UnitFloat = Annotated[float, Range(ge=0, le=1)]
AnyFloat = Annotated[float, Range()]
"""Any finite number (coordinates, offsets): declared so that every numeric field has a range."""


def parse_config(
    cls: type[C],
    argv: list[str],
    description: str | None = None,
    recipes: Recipes | None = None,
    default: C | None = None,
) -> C:
    """Defaults (``default``, else the class's) or ``--recipe`` <- ``--config`` YAML <-
    command-line flags, then checked."""
    argv = list(argv)
    recipe = pop_option(argv, "--recipe")
    config_file = pop_option(argv, "--config")
    if recipe:
        base = recipe_config(typing.get_origin(cls) or cls, recipe, recipes, "--recipe")
    else:
        base = default if default is not None else cls()
    if config_file:
        base = load_yaml_config(cls, config_file, recipes, base=base, recipe=recipe)
    if recipes:
        names = ", ".join(recipes)
        description = f"{description or ''}\n\n--recipe NAME starts from a named config: {names}."
    cfg = run_tyro(cls, base, argv, description)
    check_config(cfg)
    return cfg


def pop_option(argv: list[str], flag: str) -> str | None:
    """Remove ``flag VALUE`` (or ``flag=VALUE``) from ``argv``; return VALUE (None if absent)."""
    for at, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            del argv[at]
            return arg.split("=", 1)[1]
        if arg == flag:
            if at + 1 >= len(argv) or argv[at + 1].startswith("--"):
                raise MclnfError(f"{flag} needs a value")
            value = argv[at + 1]
            del argv[at : at + 2]
            return value
    return None


def run_tyro(cls: type[C], base: C, argv: list[str], description: str | None) -> C:
    """tyro's parse; a rejected command line becomes one :class:`MclnfError` line built from
    tyro's parse-error event (what was rejected, which flag), not from its rendered box."""
    import tyro
    from tyro import _errors as tyro_errors  # pinned in pyproject: the hook is not public API

    def raise_one_line(event: Any) -> None:
        raise MclnfError(parse_error_line(event, tyro_errors) + " (see --help)")

    with tyro_errors.on_parse_error(raise_one_line):
        return tyro.cli(cls, default=base, args=argv, description=description)


def parse_error_line(event: Any, kinds: Any) -> str:
    """One line for a tyro parse-error event: the rejected token and the flag it was for."""
    flag = getattr(getattr(event, "argument", None), "display_name", lambda: "")()
    if isinstance(event, kinds.UnrecognizedArgs):
        return f"unrecognized arguments: {' '.join(event.tokens)}"
    if isinstance(event, kinds.InvalidChoice):
        return (
            f"invalid choice {event.value!r} for argument '{flag}' "
            f"(expected one of: {', '.join(event.choices)})"
        )
    if isinstance(event, kinds.BadValue):
        if event.offending_value is None:
            return f"argument '{flag}' needs a value"
        return f"argument '{flag}' takes no value, got {event.offending_value!r}"
    if isinstance(event, kinds.MissingArgs):
        names = ", ".join(item.arg.display_name() for item in event.missing_arguments)
        return f"missing arguments: {names}"
    if isinstance(event, kinds.InstantiationFailure):
        return f"argument '{flag}': {event.message}" if flag else event.message
    return f"invalid command line ({type(event).__name__})"


def recipe_config(cls: type, name: Any, recipes: Recipes | None, where: str) -> Any:
    """A fresh config from the recipe ``name``; one line naming the valid recipes otherwise."""
    known = recipes or {}
    if name not in known:
        expected = ", ".join(known) or "none for this config"
        raise MclnfError(f"{where}: unknown recipe {name!r} (expected one of: {expected})")
    config = known[name]()
    if not isinstance(config, cls):
        raise MclnfError(
            f"{where}: recipe {name!r} is a {type(config).__name__}, not {cls.__name__}"
        )
    return config


def load_yaml_config(
    cls: type[C],
    path: str,
    recipes: Recipes | None = None,
    base: C | None = None,
    recipe: str | None = None,
) -> C:
    """A config from a YAML file: missing keys keep the values of ``base`` (default: the class
    defaults), or of the recipe the file names with a top-level ``recipe:`` key."""
    file = Path(path)
    if not file.is_file():
        raise MclnfError(f"config file {path} does not exist (expected a YAML file)")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise MclnfError(
            f"config file {path} is not valid YAML: {str(err).splitlines()[0]}"
        ) from err
    if isinstance(data, dict) and recipe and data.get("recipe", recipe) != recipe:
        raise MclnfError(
            f"{path}: recipe {data['recipe']!r} differs from --recipe {recipe} (give one of them)"
        )
    return from_mapping(cls, data, path, recipes, base)


def from_mapping(
    cls: type[C],
    data: Any,
    source: str,
    recipes: Recipes | None = None,
    base: C | None = None,
    prefix: str = "",
) -> C:
    """``base`` (or the class defaults, or the mapping's ``recipe:``) with ``data`` applied."""
    if isinstance(data, dict) and "recipe" in data:
        data = dict(data)
        base = recipe_config(cls, data.pop("recipe"), recipes, f"{source}: {prefix}recipe")
    cfg = merge(base if base is not None else cls(), data, source, prefix)
    check_config(cfg, source)
    return cfg


def merge(config: C, data: dict[str, Any], source: str, prefix: str = "") -> C:
    """``config`` with the values of ``data`` applied (recursively; each value converted and
    checked by :func:`conform` against its field's type, choices and range)."""
    if not isinstance(data, dict):
        raise MclnfError(f"{source}: {prefix or 'top level'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(type(config), include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(config)}
    updates = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        where = f"{prefix}{key}"
        if name not in fields:
            raise MclnfError(
                f"{source}: unknown key {where!r} (expected one of: {', '.join(fields)})"
            )
        current = getattr(config, name)
        if dataclasses.is_dataclass(current):
            updates[name] = merge(current, value, source, prefix=f"{where}.")
            continue
        updates[name], problem = conform(value, hints[name])
        if problem:
            raise MclnfError(f"{source}: {where} {problem}")
    return dataclasses.replace(config, **updates)


def conform(value: Any, hint: Any) -> tuple[Any, str | None]:
    """``value`` converted to the type hint (YAML lists -> tuples, ints -> floats, YAML's numeric
    text -> floats) and why it breaks the hint's type, ``Literal`` choices or :class:`Range`
    (``"must be >= 1, got 0"``; None when it does not).

    The one walker over the config type grammar: :func:`merge` keeps the converted value,
    :func:`check_config` only the problem.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        value, problem = conform(value, args[0])
        for rule in args[1:] if problem is None else ():
            if isinstance(rule, Range) and (problem := rule.problem(value)):
                break
        return value, problem
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value, None
        return value, f"must be one of: {choices(args)}, got {value!r}"
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None, None
        results = [conform(value, a) for a in args if a is not type(None)]
        return next((r for r in results if r[1] is None), results[0])
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            return value, f"must be a list, got {value!r}"
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return value, f"must have {len(args)} items, got {value!r}"
            items = args
        else:
            items = (args[0] if args else Any,) * len(value)
        converted = []
        for item, item_hint in zip(value, items, strict=True):
            item, problem = conform(item, item_hint)
            if problem:
                return value, problem
            converted.append(item)
        return origin(converted), None
    if hint is float:
        return as_float(value)
    if hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value), None
        return value, f"must be int, got {value!r}"
    if hint in (str, bool) and not isinstance(value, hint):
        return value, f"must be {hint.__name__}, got {value!r}"
    return value, None


def choices(args: tuple) -> str:
    return ", ".join(str(a) for a in args)


def as_float(value: Any) -> tuple[Any, str | None]:
    """A number as float; YAML 1.1 reads ``1e-3`` (no dot) as text, so numeric text counts too."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value), None
    if isinstance(value, str):
        try:
            return float(value), None
        except ValueError:
            pass
    return value, f"must be float, got {value!r}"


def check_config(config: Any, source: str | None = None, prefix: str = "") -> None:
    """Raise one :class:`MclnfError` line at the first field of the tree that breaks its type,
    ``Literal`` choices or :class:`Range`, or at the first broken cross-field rule (a node's own
    fields first, then its rules; configs built in code, from flags or recipes included)."""
    hints = typing.get_type_hints(type(config), include_extras=True)
    lead = f"{source}: " if source else ""
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        where = f"{prefix}{item.name}"
        if dataclasses.is_dataclass(value):
            check_config(value, source, f"{where}.")
            continue
        _, problem = conform(value, hints[item.name])
        if problem:
            raise MclnfError(f"{lead}{where} {problem}")
    if problem := rule_problem(config, prefix):
        raise MclnfError(f"{lead}{problem}")


def numeric_fields_without_range(cls: type, prefix: str = "") -> list[str]:
    """Dotted names of the int/float fields of ``cls`` (and of its nested configs) that declare
    no :class:`Range`: what the config tests require to be empty."""
    missing = []
    hints = typing.get_type_hints(cls, include_extras=True)
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        where = f"{prefix}{item.name}"
        plain = unwrap(hint)
        if dataclasses.is_dataclass(plain):
            missing += numeric_fields_without_range(plain, f"{where}.")
        elif not numbers_ranged(hint):
            missing.append(where)
    return missing


def unwrap(hint: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return unwrap(args[0])
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return unwrap(options[0]) if len(options) == 1 else hint
    return hint


def numbers_ranged(hint: Any) -> bool:
    """True unless ``hint`` holds an int/float (alone, optional or in a tuple) with no Range."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        if any(isinstance(rule, Range) for rule in args[1:]):
            return True
        return numbers_ranged(args[0])
    if origin in (typing.Union, types.UnionType, tuple, list):
        return all(numbers_ranged(a) for a in args if a is not Ellipsis and a is not type(None))
    return hint not in (int, float)


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML-able dict of a config."""
    return dataclasses.asdict(config)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"meta": {"inner_lr": 0.01}}`` -> ``{"meta.inner_lr": 0.01}`` (MLflow params)."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def save_yaml(config: Any, path: str | Path) -> None:
    """Write a config as YAML that :func:`load_yaml_config` reads back."""
    text = yaml.safe_dump(json_ready(to_dict(config)), sort_keys=False)
    Path(path).write_text(text)


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def describe(config: Any) -> str:
    """A resolved config in a few lines: one per section (``meta: inner_steps=2 inner_lr=1.0``),
    the top-level values on the first; the full YAML goes to the run's tracking."""
    top, sections = [], []
    for key, value in to_dict(config).items():
        if isinstance(value, dict):
            items = " ".join(f"{k}={v}" for k, v in flatten(json_ready(value)).items())
            sections.append(f"  {key}: {items}")
        else:
            top.append(f"{key}={json_ready(value)}")
    return "\n".join(["resolved config: " + " ".join(top), *sections])
