"""One config system: typed dataclasses, loadable from YAML, overridable from the command line.

``parse_config(Cls, argv)`` reads an optional ``--config FILE.yaml`` (validated: an unknown key or a
value of the wrong type stops with one line naming the file and key), then lets ``tyro`` apply
command-line overrides such as ``--meta.inner-steps 8``. The field docstrings are the ``--help``.
"""

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mclnf_dist.errors import MclnfError

C = TypeVar("C")


def parse_config(cls: type[C], argv: list[str], description: str | None = None) -> C:
    """Defaults <- ``--config`` YAML <- command-line flags."""
    argv = list(argv)
    base = cls()
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 >= len(argv):
            raise MclnfError("--config needs a YAML file path")
        base = load_yaml_config(cls, argv[at + 1])
        del argv[at : at + 2]
    import tyro

    return tyro.cli(cls, default=base, args=argv, description=description)


def load_yaml_config(cls: type[C], path: str) -> C:
    """A config from a YAML file (missing keys keep their defaults)."""
    file = Path(path)
    if not file.is_file():
        raise MclnfError(f"config file {path} does not exist (expected a YAML file)")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise MclnfError(
            f"config file {path} is not valid YAML: {str(err).splitlines()[0]}"
        ) from err
    return merge(cls(), data, source=path)


def merge(config: C, data: dict[str, Any], source: str, prefix: str = "") -> C:
    """``config`` with the values of ``data`` applied (recursively, validated)."""
    if not isinstance(data, dict):
        raise MclnfError(f"{source}: {prefix or 'top level'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(type(config))
    fields = {f.name: f for f in dataclasses.fields(config)}
    updates = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        where = f"{prefix}{key}"
        if name not in fields:
            raise MclnfError(
                f"{source}: unknown key {where!r} (expected one of: {', '.join(fields)})"
            )
        current = getattr(config, name)
        if dataclasses.is_dataclass(current):
            updates[name] = merge(current, value, source, prefix=f"{where}.")
        else:
            updates[name] = coerce(value, hints[name], source, where)
    return dataclasses.replace(config, **updates)


def coerce(value: Any, hint: Any, source: str, where: str) -> Any:
    """Check ``value`` against a simple type hint (int/float/str/bool/tuple/list/Optional)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return coerce(value, options[0], source, where)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise MclnfError(f"{source}: {where} must be a list, got {value!r}")
        item = args[0] if args else Any
        return origin(coerce(v, item, source, where) for v in value)
    if hint is float:
        return as_float(value, source, where)
    if hint in (int, str, bool) and not isinstance(value, hint):
        raise MclnfError(f"{source}: {where} must be {hint.__name__}, got {value!r}")
    if hint is int and isinstance(value, bool):
        raise MclnfError(f"{source}: {where} must be int, got {value!r}")
    return value


def as_float(value: Any, source: str, where: str) -> float:
    """A number as float; YAML 1.1 reads ``1e-3`` (no dot) as text, so numeric text counts too."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise MclnfError(f"{source}: {where} must be float, got {value!r}")


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
