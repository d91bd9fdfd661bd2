"""The paper's eight methods plus ``mod-random``, as data: one registry, one code path.

``mod-random`` (one module per segment, each from a random init) separates the two ideas behind
``mod``: modules (T times the parameters, no forgetting) and the meta-learned init. Without it a
gain of ``mod`` over ``random`` could come from either.

A method is fully described by where its initialisation comes from, whether it is modular, how it
meets the segments at test time, and its loss/regulariser. Everything else (meta-training,
adaptation, evaluation) reads these fields, so there are no per-method code branches to drift.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from mclnf_dist.errors import MclnfError

GROUPS = ("offline", "continual", "meta-offline", "meta-continual")
MethodName = Literal[
    "random", "finetune", "ewc", "replay", "mod-random", "maml", "oml", "mod", "mim"
]
"""The methods' names in the paper's table order; :data:`METHODS` registers each (tested)."""


@dataclass(frozen=True)
class MethodSpec:
    """How one method initialises, meets the segments, and learns them."""

    name: MethodName
    group: str
    """Paper's grouping: offline | continual | meta-offline | meta-continual."""
    meta_schedule: str | None
    """Meta-training schedule (``modular``/``shared``/``sequential``); ``None``: random init."""
    test_schedule: str
    """``offline``: one net on all coordinates; ``sequential``: one net, segment after segment;
    ``modular``: one module per segment, each adapting on its own segment."""
    fim: bool = False
    """Use the FIM-weighted loss (inner loop and test-time adaptation)."""
    regulariser: str | None = None
    """``ewc`` or ``replay`` for the continual-learning baselines."""
    head_only: bool = False
    """Adapt only the head layers at test time (OML's prediction network)."""
    description: str = ""

    @property
    def modular(self) -> bool:
        return self.test_schedule == "modular"

    @property
    def meta_learned(self) -> bool:
        return self.meta_schedule is not None


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in [
        MethodSpec("random", "offline", None, "offline", description="random init, fit offline"),
        MethodSpec("finetune", "continual", None, "sequential", description="one net, in order"),
        MethodSpec("ewc", "continual", None, "sequential", regulariser="ewc", description="+EWC"),
        MethodSpec(
            "replay",
            "continual",
            None,
            "sequential",
            regulariser="replay",
            description="+experience replay",
        ),
        MethodSpec(
            "mod-random",
            "continual",
            None,
            "modular",
            description="modules from a random init (no meta-learning)",
        ),
        MethodSpec("maml", "meta-offline", "shared", "offline", description="MAML, one net"),
        MethodSpec(
            "oml",
            "meta-continual",
            "sequential",
            "sequential",
            head_only=True,
            description="OML: meta-learned representation, head adapted in order",
        ),
        MethodSpec(
            "mod", "meta-continual", "modular", "modular", description="modules + MAML init + MSE"
        ),
        MethodSpec(
            "mim",
            "meta-continual",
            "modular",
            "modular",
            fim=True,
            description="modules + MAML init + FIM loss (MCL-NF)",
        ),
    ]
}


def get_method(name: str) -> MethodSpec:
    """The registered method ``name``, or a one-line error listing the valid names."""
    try:
        return METHODS[name]
    except KeyError:
        raise MclnfError(
            f"unknown method {name!r} (expected one of: {', '.join(METHODS)})"
        ) from None


def one_configuration(a: MethodSpec, b: MethodSpec, fim_lambda: float) -> bool:
    """True when ``a`` and ``b`` train exactly alike: they differ at most in the FIM loss, and
    its weight is 0 (``mim`` with ``--fim.fim-lambda 0`` is ``mod``)."""
    strip = {"name": "mod", "description": "", "fim": False}
    same_rest = replace(a, **strip) == replace(b, **strip)
    return same_rest and (a.fim == b.fim or fim_lambda == 0.0)


def distinct_methods(
    names: Sequence[str], fim_lambda: float
) -> tuple[list[MethodSpec], dict[str, str]]:
    """The methods of ``names`` worth running, and the others: name -> the earlier method of the
    list it is one configuration with (:func:`one_configuration`; its run would repeat that one's,
    so a comparison of the two is "not tested", not an A/A difference of noise)."""
    kept: list[MethodSpec] = []
    skipped: dict[str, str] = {}
    for spec in (get_method(name) for name in names):
        twin = next((k for k in kept if one_configuration(k, spec, fim_lambda)), None)
        if twin is None:
            kept.append(spec)
        else:
            skipped[spec.name] = twin.name
    return kept, skipped


InitObjective = Literal["random", "mse", "fim", "oml"]


@dataclass(frozen=True)
class InitKey:
    """Which ``theta_0`` a method starts from: methods with equal keys share one init (and one
    meta-training). ``str(key)`` names its files and metrics (``theta0-mse.pt``, ``meta-oml``)."""

    objective: InitObjective
    """``random`` (no meta-learning), ``mse`` / ``fim`` (tasks adapt modules, MSE or FIM inner
    loss), ``oml`` (segments streamed through one network's head)."""
    shared: bool = False
    """MAML's own objective on signals: one network adapts to a whole signal (in a city the
    blocks are the tasks either way, so ``maml`` shares ``mod``'s ``mse`` init there)."""
    matched: bool = False
    """A one-network method widened to all the modules' parameters (``--param-match``)."""

    def __str__(self) -> str:
        return self.objective + "-shared" * self.shared + "-matched" * self.matched

    @property
    def meta_learned(self) -> bool:
        return self.objective != "random"

    @property
    def schedule(self) -> str:
        """The meta-training's task schedule (:mod:`mclnf_dist.meta.meta_learning`)."""
        return "sequential" if self.objective == "oml" else "shared" if self.shared else "modular"

    @property
    def uses_fim(self) -> bool:
        return self.objective == "fim"


MSE = InitKey("mse")
"""The modules' meta-learned init with the MSE inner loss (what block training starts from)."""
RANDOM = InitKey("random")


def init_key(
    spec: MethodSpec, fim_lambda: float, blocks_are_tasks: bool, param_match: bool = False
) -> InitKey:
    """The one method -> init mapping. ``fim_lambda`` 0 is exactly MSE (``mim`` then shares
    ``mod``'s init); ``blocks_are_tasks``: a city, where ``maml``'s tasks are ``mod``'s blocks;
    ``param_match``: one-network methods get their own, widened init."""
    matched = param_match and not spec.modular
    if not spec.meta_learned:
        return InitKey("random", matched=matched)
    if spec.meta_schedule == "sequential":
        return InitKey("oml", matched=matched)
    objective = "fim" if spec.fim and fim_lambda > 0 else "mse"
    shared = spec.meta_schedule == "shared" and not blocks_are_tasks
    return InitKey(objective, shared=shared, matched=matched)
