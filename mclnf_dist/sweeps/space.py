"""Search spaces: a readable YAML file, validated, turned into a Ray Tune param space.

A space file (``tune_spaces/*.yaml``)::

    pipeline: city                 # city | signals
    base: {recipe: city-demo, meta: {outer_steps: 60}}   # every trial's config (as --config YAML)
    metric: {name: val_psnr, adapt_step: 16, every: 10}
    space:
      fim.fim_lambda: {dist: loguniform, low: 0.01, high: 2.0}
      meta.inner_steps: {dist: randint, low: 1, high: 4}      # both ends included
      meta.algorithm: {dist: choice, values: [maml, fomaml]}
      fim.w_max: {dist: grid, values: [2.0, 5.0, 10.0]}       # every value, num_samples times

Every key of ``space`` is a dotted field path of the pipeline's config dataclass (what ``--config``
YAML nests), so a trial's config is exactly what ``--config`` would give: the dataclass defaults
or the recipe ``base`` names <- ``base`` <- the sampled values, all through
:func:`mclnf_dist.config.merge` (so every value is checked against its field's choices and range;
the ends of a sampled range are checked when the file is loaded). ``metric``:
``val_psnr`` is the validation PSNR after ``adapt_step`` adaptation steps from the trial's current
``theta_0``, measured (and reported to Tune) every ``every`` meta-rounds. The trial's number of
meta-rounds is the pipeline's own budget field (city ``meta.outer_steps``, signals
``meta.outer_steps``), set in ``base`` and never swept: it is the schedulers' time axis.

Problems are :class:`MclnfError` lines naming the file and the key (with the nearest valid keys).
"""

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from mclnf_dist.config import PositiveInt, as_float, from_mapping, merge, unwrap
from mclnf_dist.errors import MclnfError
from mclnf_dist.experiments.recipes import recipes_for
from mclnf_dist.sweeps.targets import Pipeline, pipelines

DISTRIBUTIONS = {
    "uniform": "a float in [low, high]",
    "loguniform": "a float in [low, high], uniform in log (low > 0)",
    "randint": "an integer in [low, high], both ends included",
    "choice": "one of values",
    "grid": "every one of values (grid search; num_samples repeats the grid)",
}
TOP_LEVEL = ("pipeline", "base", "metric", "space")


@dataclass(frozen=True)
class ParamSpec:
    """How one config field is sampled."""

    key: str
    dist: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()

    def tune_domain(self) -> Any:
        from ray import tune

        if self.dist == "uniform":
            return tune.uniform(self.low, self.high)
        if self.dist == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.dist == "randint":
            return tune.randint(int(self.low), int(self.high) + 1)  # Tune's upper end is open
        if self.dist == "choice":
            return tune.choice(list(self.values))
        return tune.grid_search(list(self.values))

    def describe(self) -> str:
        if self.dist in ("choice", "grid"):
            return f"{self.dist} {list(self.values)}"
        return f"{self.dist} [{self.low}, {self.high}]"


@dataclass(frozen=True)
class MetricSpec:
    """What trials report: ``name`` after ``adapt_step`` steps, every ``every`` meta-rounds."""

    name: Literal["val_psnr"] = "val_psnr"
    """The validation PSNR after ``adapt_step`` adaptation steps."""
    adapt_step: PositiveInt = 16
    """Adaptation steps before the validation PSNR is measured."""
    every: PositiveInt = 10
    """Meta-rounds between two reports to Tune."""


@dataclass
class SweepSpace:
    """A validated space file."""

    source: str
    pipeline: Pipeline
    base: dict
    metric: MetricSpec
    params: dict[str, ParamSpec]

    def tune_space(self) -> dict[str, Any]:
        """The Ray Tune param space: flat dotted keys -> Tune domains."""
        return {key: spec.tune_domain() for key, spec in self.params.items()}

    @property
    def has_grid(self) -> bool:
        return any(spec.dist == "grid" for spec in self.params.values())

    def base_config(self) -> Any:
        """Defaults or ``base``'s recipe <- ``base`` (what the driver prepares the data from)."""
        return base_config(self.pipeline, self.base, self.source)

    def trial_config(self, sampled: dict[str, Any]) -> Any:
        """Defaults <- ``base`` <- sampled values: the full config a trial runs (and
        ``best_config.yaml`` holds), checked."""
        plain = {k: v.item() if hasattr(v, "item") else v for k, v in sampled.items()}  # numpy
        return from_mapping(
            type(self.base_config()),
            nest(plain),
            f"{self.source} (sampled values)",
            base=self.base_config(),
        )

    def rounds(self, cfg: Any) -> int:
        """The trial budget in meta-rounds (the pipeline's budget field)."""
        return int(get_path(cfg, self.pipeline.budget_key))

    def reports(self, cfg: Any) -> int:
        """Tune reports (``training_iteration`` values) of a full trial."""
        return math.ceil(self.rounds(cfg) / self.metric.every)

    def describe(self) -> dict[str, str]:
        return {key: spec.describe() for key, spec in self.params.items()}


def load_space(path: str | Path) -> SweepSpace:
    """Read and validate a space file (see the module docstring)."""
    source = str(path)
    file = Path(path)
    if not file.is_file():
        raise MclnfError(f"search space {source} does not exist (expected a YAML file)")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        raise MclnfError(f"{source} is not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(data, dict):
        raise MclnfError(f"{source}: expected a mapping with keys {', '.join(TOP_LEVEL)}")
    for key in data:
        if key not in TOP_LEVEL:
            expected = ", ".join(TOP_LEVEL)
            raise MclnfError(f"{source}: unknown key {key!r} (expected one of: {expected})")
    registry = pipelines()
    name = data.get("pipeline")
    if name not in registry:
        raise MclnfError(f"{source}: pipeline must be one of: {', '.join(registry)} (got {name!r})")
    pipeline = registry[name]
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise MclnfError(f"{source}: base must be a mapping of config overrides, got {base!r}")
    base_cfg = base_config(pipeline, base, source, prefix="base.")
    metric = parse_metric(source, data.get("metric") or {})
    space = data.get("space")
    if not isinstance(space, dict) or not space:
        raise MclnfError(f"{source}: space must be a non-empty mapping of config keys to ranges")
    params = {k: parse_param(source, pipeline, base_cfg, k, spec) for k, spec in space.items()}
    budget = get_path(base_cfg, pipeline.budget_key)
    if budget < 1:
        raise MclnfError(f"{source}: base {pipeline.budget_key} must be >= 1, got {budget}")
    return SweepSpace(source, pipeline, base, metric, params)


def base_config(pipeline: Pipeline, base: dict, source: str, prefix: str = "") -> Any:
    """The pipeline's defaults (or the recipe ``base`` names) with ``base`` applied."""
    recipes = recipes_for(pipeline.config_class)
    return from_mapping(pipeline.config_class, base, source, recipes, prefix=prefix)


def parse_metric(source: str, data: Any) -> MetricSpec:
    """The ``metric`` mapping, checked like any config (its fields' choices and ranges)."""
    return merge(MetricSpec(), data, source, prefix="metric.")


def parse_param(source: str, pipeline: Pipeline, base_cfg: Any, key: Any, spec: Any) -> ParamSpec:
    """One ``space`` entry, checked against the config's fields and types."""
    where = f"{source}: space.{key}"
    valid = leaf_paths(base_cfg)
    if not isinstance(key, str) or key not in valid:
        sections = {p.rsplit(".", 1)[0] for p in valid if "." in p}
        if key in sections:
            examples = ", ".join(p for p in valid if p.startswith(f"{key}."))[:120]
            raise MclnfError(f"{where} is a section, not a value (expected one of: {examples})")
        near = difflib.get_close_matches(str(key), valid, n=3, cutoff=0.5)
        hint = f"nearest valid keys: {', '.join(near)}" if near else "see --help for the fields"
        raise MclnfError(f"{where} is not a field of the {pipeline.name} config ({hint})")
    if key.startswith("data."):
        raise MclnfError(
            f"{where}: data.* cannot be swept (the data are prepared once, before the trials; "
            "set it under base)"
        )
    if key == pipeline.budget_key:
        raise MclnfError(
            f"{where}: {key} is the trials' budget (the schedulers' time axis), not a "
            "hyperparameter (set it under base)"
        )
    if not isinstance(spec, dict) or "dist" not in spec:
        raise MclnfError(f"{where} must be a mapping with a 'dist' key, got {spec!r}")
    dist = spec["dist"]
    if dist not in DISTRIBUTIONS:
        raise MclnfError(
            f"{where}: unknown dist {dist!r} (expected one of: {', '.join(DISTRIBUTIONS)})"
        )
    expected = ("dist", "values") if dist in ("choice", "grid") else ("dist", "low", "high")
    for name in spec:
        if name not in expected:
            raise MclnfError(
                f"{where}: unknown key {name!r} for dist {dist} (expected: {', '.join(expected)})"
            )
    if dist in ("choice", "grid"):
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise MclnfError(f"{where}: {dist} needs a non-empty list of values, got {values!r}")
        checked = tuple(check_value(source, base_cfg, key, v) for v in values)
        return ParamSpec(key, dist, values=checked)
    bounds = []
    for name in ("low", "high"):
        value = spec.get(name)
        number, problem = as_float(value)
        if problem:
            raise MclnfError(f"{where}: {name} must be a number, got {value!r}")
        if not math.isfinite(number):
            raise MclnfError(f"{where}: {name} must be a finite number, got {value!r}")
        bounds.append(number)
    low, high = bounds
    if not low < high:
        raise MclnfError(f"{where}: low must be less than high, got low={low} high={high}")
    hint = field_type(base_cfg, key)
    if dist == "randint":
        if hint is not int:
            raise MclnfError(f"{where}: randint needs an int field, {key} is {_name(hint)}")
        if int(low) != low or int(high) != high:
            raise MclnfError(f"{where}: randint bounds must be integers, got {low}, {high}")
        check_bounds(source, base_cfg, key, int(low), int(high))
        return ParamSpec(key, dist, int(low), int(high))
    if hint is not float:
        suggestion = " (use randint or choice)" if hint is int else " (use choice)"
        raise MclnfError(f"{where}: {dist} needs a float field, {key} is {_name(hint)}{suggestion}")
    if dist == "loguniform" and low <= 0:
        raise MclnfError(f"{where}: loguniform needs low > 0, got low={low}")
    check_bounds(source, base_cfg, key, float(low), float(high))
    return ParamSpec(key, dist, float(low), float(high))


def check_bounds(source: str, base_cfg: Any, key: str, low: Any, high: Any) -> None:
    """Both ends of a sampled range inside the field's declared range (so is all between)."""
    for bound in (low, high):
        check_value(source, base_cfg, key, bound)


def check_value(source: str, base_cfg: Any, key: str, value: Any) -> Any:
    """``value`` type-, choice- and range-checked (and coerced) as the field ``key``."""
    hint = field_type(base_cfg, key)
    if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
        allowed = ", ".join(str(a) for a in typing.get_args(hint))
        raise MclnfError(
            f"{source}: space.{key}: unknown value {value!r} (expected one of: {allowed})"
        )
    cfg = merge(base_cfg, nest({key: value}), f"{source}: space")
    coerced = get_path(cfg, key)
    return list(coerced) if isinstance(coerced, tuple) else coerced


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"fim.beta": 0.1}`` -> ``{"fim": {"beta": 0.1}}`` (a ``--config`` YAML mapping)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def leaf_paths(cfg: Any, prefix: str = "") -> list[str]:
    """Every dotted path to a non-dataclass field of ``cfg``."""
    paths = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            paths += leaf_paths(value, f"{prefix}{f.name}.")
        else:
            paths.append(f"{prefix}{f.name}")
    return paths


def get_path(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def field_type(cfg: Any, key: str) -> Any:
    """The type of the field ``key`` without its range or ``| None`` (``int``, a Literal...)."""
    owner_path, _, name = key.rpartition(".")
    owner = get_path(cfg, owner_path) if owner_path else cfg
    return unwrap(typing.get_type_hints(type(owner), include_extras=True)[name])


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))
