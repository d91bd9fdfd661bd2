"""The results report end to end on tiny budgets: every section runs its real pipeline once per
seed (real data, real Ray, a real MLflow store), and the markdown has every table, every method,
every claim and every picture; report.json has the seeds and the per-method aggregates."""

import json
import re

import pytest

from mclnf_dist.errors import MclnfError
from mclnf_dist.experiments.recipes import recipe
from mclnf_dist.jobs.report import SECTIONS, ReportConfig, run_report
from mclnf_dist.meta.methods import METHODS
from mclnf_dist.run_settings import RunSettings


def section_text(text: str, title: str) -> str:
    """The markdown between ``## title`` and the next ``## ``."""
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def table_methods(text: str) -> list[str]:
    """Method names of the first results table in ``text`` (rows after its ``| method`` header)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\| method +\|", line))
    names = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        first = line.split("|")[1].strip()
        if not first.startswith("*"):  # group rows: | *offline* | ...
            names.append(first)
    return names


@pytest.mark.timeout(2400)  # 5 sections x 2 seeds: ~20 min on a loaded 2-core machine
def test_report_runs_end_to_end_with_every_method_in_every_table(ray_local, tmp_path):
    out = tmp_path / "docs" / "results.md"
    cfg = ReportConfig(
        tiny=True,
        seeds=(0, 1),
        output=str(out),
        work_dir=str(tmp_path / "work"),
        run=RunSettings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
        views=False,  # the own-plan and equal-parameter views: the test below
    )
    assert run_report(cfg) == out
    text = out.read_text()
    for heading in (
        "## Setup",
        "## The paper's claims on this data",
        "### 1a. A meta-learned init adapts faster",
        "### 2. The FIM loss helps",
        "### 3. No forgetting",
    ):
        assert heading in text
    raw = json.loads((out.parent / "results" / "report.json").read_text())
    # where a section ships the FIM weight 0 (its FIM study's winner is MSE), mim is mod there:
    # not run, its claim "not tested"
    mse = {s.name: recipe(s.recipe + "-tiny").fim.is_mse for s in SECTIONS}
    assert mse["city"]
    ran = {}
    for section in SECTIONS:
        ran[section.name] = sorted(set(METHODS) - ({"mim"} if mse[section.name] else set()))
        body = section_text(text, section.title)
        assert sorted(table_methods(body)) == ran[section.name], section.name
        twin = "`mim` is `mod` in this section (FIM weight 0): not run."
        assert (twin in body) == mse[section.name], section.name
        assert re.search(rf"\| {section.name} +\|", section_text(text, "Setup")), section.name
    held_out = section_text(text, SECTIONS[-1].title).split("never meta-trained on")[1]
    assert sorted(table_methods(held_out)) == ran["city"]
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    expected = 2 * (len(SECTIONS) - 1) + 3  # curves + reconstructions; city: + views + flight
    assert len(pictures) == expected, pictures
    for picture in pictures:
        assert (out.parent / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
    assert set(raw) == {s.name for s in SECTIONS}
    for name, entry in raw.items():
        assert entry["seeds"] == [0, 1], name
        assert [r["config"]["run"]["seed"] for r in entry["runs"]] == [0, 1], name
        assert sorted(entry["methods"]) == ran[name], name
        for method, metrics in entry["methods"].items():
            values = metrics["psnr_step1"]["values"]
            assert values == [
                next(s["psnr_step1"] for s in r["results"] if s["method"] == method)
                for r in entry["runs"]
            ], (name, method)
            assert metrics["psnr_step1"]["mean"] == pytest.approx(sum(values) / 2)
            assert set(metrics) >= {"auc", "psnr_at_16", "steps_to_target", "forgetting"}
        assert {c["claim"] for c in entry["claims"]} == {"1a", "1b", "overall", "2"}
        run = [c for c in entry["claims"] if c["verdict"] not in ("not measured", "not tested")]
        assert run and all(c["n"] == 2 for c in run)
        for claim in entry["claims"]:
            assert {"p_adjusted", "plan_view", "param_matched", "judged_items"} <= set(claim)
            assert claim["judged_items"], (name, claim)
        fim = [c["verdict"] for c in entry["claims"] if c["difference"] == "mim - mod"]
        assert (set(fim) == {"not tested"}) == mse[name], (name, fim)
    never = [c for c in raw["city"]["claims"] if c["counted"]]
    held_out = [str(b) for b in raw["city"]["runs"][0]["blocks"]["held_out"]]  # never meta-trained
    assert never and held_out and all(c["judged_items"] == held_out for c in never)


@pytest.mark.timeout(1200)
def test_views_rerun_own_plans_and_claim_1b_at_equal_parameters(ray_local, tmp_path):
    """Audio: three of its plan study's methods prefer another plan than the shared one, so they
    re-run at it (those sharing one plan together); random, maml and oml re-run at the
    modules' size for claim 1b."""
    out = tmp_path / "results.md"
    cfg = ReportConfig(
        tiny=True,
        seeds=(0, 1),
        sections=("audio",),
        output=str(out),
        work_dir=str(tmp_path / "work"),
        run=RunSettings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
    )
    run_report(cfg)
    entry = json.loads((out.parent / "results" / "report.json").read_text())["audio"]
    views = {(c["plan_view"], c["param_matched"]) for c in entry["claims"]}
    assert views == {("shared", False), ("own", False), ("shared", True)}, views
    for claim in entry["claims"]:  # 1b counts at equal parameters only, and only 1b is there
        if claim["param_matched"]:
            assert claim["claim"] == "1b" and claim["counted"], claim
        elif claim["claim"] == "1b":
            assert not claim["counted"], claim
    ran = set(METHODS) - ({"mim"} if recipe("audio-tiny").fim.is_mse else set())
    for seed, own in enumerate(entry["own_plan_runs"]):
        plans = own["plans"]
        assert set(plans) == ran
        rerun = {m for m, p in plans.items() if p["rerun"]}
        assert rerun == {"random", "mod-random", "maml"}, plans
        main = {r["method"]: r for r in entry["runs"][seed]["results"]}
        for result in own["results"]:  # the others are the shared plan's very numbers
            same = result == main[result["method"]]
            assert same != (result["method"] in rerun), result["method"]
    # methods that share their own plan re-run together (one meta-training serves them)
    own_runs = sorted(p.name for p in (tmp_path / "work" / "audio").glob("seed-0-own-*"))
    assert own_runs == ["seed-0-own-mod-random", "seed-0-own-random-maml"], own_runs
    matched = entry["matched_runs"][0]["results"]
    assert {r["method"] for r in matched} == {"random", "maml", "oml"}
    mod = next(r for r in entry["runs"][0]["results"] if r["method"] == "mod")
    assert all(r["params_per_signal"] >= 0.8 * mod["params_per_signal"] for r in matched)
    assert "plan sensitivity:" in out.read_text() and "own plans" in out.read_text()


def test_no_seeds_or_repeated_seeds_are_refused_before_any_work(tmp_path):
    with pytest.raises(MclnfError, match=r"seeds must hold at least one seed .*got \(\)"):
        run_report(ReportConfig(seeds=(), output=str(tmp_path / "r.md")))
    with pytest.raises(MclnfError, match=r"seeds must be distinct .*got \(1, 1\)"):
        run_report(ReportConfig(seeds=(1, 1), output=str(tmp_path / "r.md")))
    with pytest.raises(MclnfError, match=r"seeds must be >= 0, got -1"):
        run_report(ReportConfig(seeds=(0, -1), output=str(tmp_path / "r.md")))
    assert not (tmp_path / "r.md").exists()


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(MclnfError, match="sections must be one of: faces, .*, got 'sky'"):
        run_report(ReportConfig(sections=("faces", "sky"), output=str(tmp_path / "r.md")))
