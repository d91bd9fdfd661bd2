"""The results report end to end on tiny budgets: every section runs its real pipeline (real data,
real Ray, a real MLflow store), and the markdown has every table, every method and every picture."""

import json
import re

import pytest

from mclnf_dist.errors import MclnfError
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


@pytest.mark.timeout(900)
def test_report_runs_end_to_end_with_every_method_in_every_table(ray_local, tmp_path):
    out = tmp_path / "docs" / "results.md"
    cfg = ReportConfig(
        tiny=True,
        output=str(out),
        work_dir=str(tmp_path / "work"),
        run=RunSettings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
    )
    assert run_report(cfg) == out
    text = out.read_text()
    for heading in ("## Setup", "## The paper's claims on this data", "### 3. No forgetting"):
        assert heading in text
    for section in SECTIONS:
        body = section_text(text, section.title)
        assert sorted(table_methods(body)) == sorted(METHODS), section.name
        assert re.search(rf"\| {section.name} +\|", section_text(text, "Setup")), section.name
    held_out = section_text(text, SECTIONS[-1].title).split("never meta-trained on")[1]
    assert sorted(table_methods(held_out)) == sorted(METHODS)
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    expected = 2 * (len(SECTIONS) - 1) + 3  # curves + reconstructions; city: + views + flight
    assert len(pictures) == expected, pictures
    for picture in pictures:
        assert (out.parent / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
    raw = json.loads((out.parent / "results" / "report.json").read_text())
    assert set(raw) == {s.name for s in SECTIONS}


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(MclnfError, match="sections must be one of: faces, .*, got 'sky'"):
        run_report(ReportConfig(sections=("faces", "sky"), output=str(tmp_path / "r.md")))
