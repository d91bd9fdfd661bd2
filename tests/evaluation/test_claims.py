"""The paper's claims judged from constructed per-seed summaries: each comparison's verdict, the
combined verdict per section, random / mod-random present in every claim, the multiplicity
correction, "not tested" for one configuration, and the city judged on its held-out blocks."""

import re

import pytest

from mclnf_dist.evaluation.claims import (
    CLAIMS,
    Scope,
    claims,
    claims_json,
    combine,
    judge,
    judge_all,
)
from mclnf_dist.evaluation.seeds import aggregate, on_segments, per_seed
from mclnf_dist.evaluation.statistics import benjamini_hochberg

SEED_LUCK = {0: 0.0, 1: 3.0, 2: -2.0}
"""What the seed does to every method alike (the pairing cancels it)."""
GROUP = {
    "random": "offline",
    "finetune": "continual",
    "ewc": "continual",
    "replay": "continual",
    "maml": "meta-offline",
    "oml": "meta-continual",
    "mod": "meta-continual",
    "mim": "meta-continual",
    "mod-random": "meta-continual",
}


def summary(method: str, seed: int, level: float, forgetting: float | None = 0.0) -> dict:
    """A summary whose curve climbs 1 dB per doubling of the steps from ``level`` at step 1."""
    curve = {str(2**k): level + SEED_LUCK[seed] + k for k in range(6)}  # steps 1 .. 32
    return {
        "method": method,
        "group": GROUP[method],
        "params_per_signal": 100,
        "psnr_step1": curve["1"],
        "psnr_last": curve["32"],
        "ssim_last": None,
        "forgetting": forgetting,
        "curve": curve,
    }


def section(levels: dict[str, list[float]], forgetting: dict[str, list[float]]) -> dict:
    """method -> seed -> summary from per-seed step-1 levels (before the seed's luck)."""
    return {
        method: {
            seed: summary(method, seed, per[seed], forgetting.get(method, [0.0] * 3)[seed])
            for seed in SEED_LUCK
        }
        for method, per in levels.items()
    }


CLEAR = {
    "random": [20.0, 20.1, 19.9],
    "finetune": [21.0, 21.0, 21.0],
    "ewc": [21.0, 21.0, 21.0],
    "replay": [21.0, 21.0, 21.0],
    "maml": [24.0, 24.2, 23.9],
    "oml": [22.0, 22.1, 22.0],
    "mod-random": [25.0, 25.2, 24.9],
    "mod": [30.0, 30.1, 29.8],
    "mim": [31.0, 31.2, 30.9],
}
FORGETTING = {"finetune": [2.0, 2.5, 3.0], "ewc": [1.0, -1.0, 0.5], "random": [None] * 3}


def verdicts(comparisons) -> dict[tuple[str, str, str], str]:
    return {(c.claim, f"{c.better} - {c.worse}", c.metric): c.verdict for c in comparisons}


def test_clear_gains_over_three_seeds_make_every_claim_hold():
    found = verdicts(judge_all([Scope("faces", section(CLEAR, FORGETTING))]))
    assert found[("1a", "mod - mod-random", "psnr_step1")] == "holds"
    assert found[("1a", "maml - random", "auc")] == "holds"
    assert found[("1b", "mod-random - random", "psnr_at_16")] == "holds"
    assert found[("overall", "mod - oml", "auc")] == "holds"
    assert found[("overall", "mod - replay", "auc")] == "holds"  # continual baselines too
    assert found[("2", "mim - mod", "psnr_at_16")] == "holds"
    assert ("2", "mim - mod-random", "auc") in found  # reference rows
    assert len(found) == 2 * 3 + 3 * 2 + 7 + 3 + 2


def test_noisy_and_negative_differences_are_inconclusive_and_reversed():
    levels = dict(CLEAR)
    levels["mim"] = [31.0, 29.0, 30.5]  # mim - mod: +1, -1.1, +0.7: covers 0
    levels["maml"] = [19.0, 19.1, 18.8]  # below random on every seed
    comparisons = judge_all([Scope("audio", section(levels, FORGETTING))])
    found = verdicts(comparisons)
    assert found[("2", "mim - mod", "auc")] == "inconclusive"
    assert found[("1a", "maml - random", "psnr_step1")] == "reversed"
    assert found[("1a", "mod - mod-random", "psnr_step1")] == "holds"
    assert combine([c.verdict for c in comparisons if c.claim == "1a"]) == "partly reversed"
    assert combine([c.verdict for c in comparisons if c.claim == "2" and c.counted]) == (
        "inconclusive"
    )


def test_combined_verdicts():
    assert combine(["holds", "holds", "not measured"]) == "holds"
    assert combine(["holds", "inconclusive"]) == "partly holds"
    assert combine(["reversed", "reversed"]) == "reversed"
    assert combine(["inconclusive", "inconclusive"]) == "inconclusive"
    assert combine(["not measured"]) == "not measured"


def test_markdown_states_each_claim_per_section_with_random_and_mod_random_in_every_table():
    sections = [Scope("faces", section(CLEAR, FORGETTING))]
    noisy = dict(CLEAR, mim=[31.0, 29.0, 30.5])
    sections.append(Scope("audio", section(noisy, FORGETTING)))
    text = "\n".join(claims(sections))
    short = text.split("\n\n")[1].splitlines()
    assert short[0] == "- 1a. a meta-learned init adapts faster: holds on faces, audio"
    assert short[3] == "- 2. the FIM loss helps: holds on faces; inconclusive on audio"
    assert "finetune on faces, finetune on audio" in short[4]  # forgetting above 0 beyond doubt
    assert "ewc on" not in short[4]  # ewc: 1.0, -1.0, 0.5 covers 0
    tables = text.split("\n### ")[1:]
    assert len(tables) == len(CLAIMS) + 1
    for table in tables:
        assert "mod-random" in table, table
        assert re.search(r"(\| random |- random )", table), table
    row = "| faces     | held-out data | mod-random - random | PSNR@16  | 3       | +5.03  | "
    assert re.search(re.escape(row) + r"\[\+4\.89, \+5\.18\] *\| 0\.\d{3} *\| holds ", text)


def test_one_seed_is_inconclusive_and_json_has_no_infinite_bounds():
    one = {m: {0: by_seed[0]} for m, by_seed in section(CLEAR, FORGETTING).items()}
    comparisons = judge_all([Scope("faces", one)])
    assert {c.verdict for c in comparisons} == {"inconclusive"}
    rows = claims_json([Scope("faces", one)])
    assert rows[0]["n"] == 1 and rows[0]["lo"] is None and rows[0]["hi"] is None


def test_aggregates_per_method_over_seeds():
    runs = [
        {"results": [summary(m, seed, CLEAR[m][seed]) for m in ("mod", "random")]}
        for seed in (0, 1, 2)
    ]
    grouped = per_seed(runs, [0, 1, 2])
    stats = aggregate(grouped, target=30.0)
    mod = stats["mod"]
    assert mod["psnr_step1"]["values"] == [30.0, 33.1, 27.8]
    assert mod["psnr_at_16"]["values"] == [34.0, 37.1, 31.8]  # step 1 + 4 doublings
    assert mod["auc"]["values"] == pytest.approx([32.5, 35.6, 30.3])  # linear in log2: midpoint
    assert mod["auc"]["mean"] == pytest.approx(32.8)
    assert mod["steps_to_target"]["values"] == [1.0, 1.0, 8.0]  # 27.8 + 3 at step 8
    assert stats["random"]["steps_to_target"]["not_reached"] == 3  # at most 28.1 dB
    harder = aggregate(grouped, target=33.0)["mod"]["steps_to_target"]
    assert harder["values"] == [8.0, 1.0, 32.0]  # seed 2 tops out at 32.8: its budget, censored
    assert (harder["mean"], harder["not_reached"]) == (pytest.approx(41 / 3), 1)
    assert stats["random"]["ssim_last"] == {"mean": None, "ci95": None, "values": [None] * 3}


def test_the_correction_turns_a_lone_small_p_among_many_into_inconclusive():
    """The same mim - mod difference (p about 0.03 on its own) holds when it is the only
    comparison made, and is inconclusive once the report makes many (BH over all of them)."""
    levels = dict(CLEAR, mim=[31.0, 30.9, 31.1])  # mim - mod: +1.0, +0.8, +1.3
    alone = judge(Scope("faces", section(levels, FORGETTING)))
    (raw,) = [c for c in alone if (c.claim, c.worse, c.metric) == ("2", "mod", "psnr_step1")]
    assert raw.difference.lo > 0 and 0.01 < raw.difference.p < 0.05
    noise = {m: [v + d for v, d in zip(CLEAR["random"], (0.5, -0.4, 0.1), strict=True)]
             for m in CLEAR}  # fmt: skip
    many = [Scope(f"null{i}", section(noise, FORGETTING)) for i in range(6)]
    judged = judge_all([Scope("faces", section(levels, FORGETTING)), *many])
    (fixed,) = [c for c in judged if (c.section, c.claim, c.worse, c.metric)
                == ("faces", "2", "mod", "psnr_step1")]  # fmt: skip
    assert fixed.p_adjusted > 0.05 and fixed.verdict == "inconclusive"
    assert any(c.verdict == "holds" for c in judged)  # the clear gains survive


def test_benjamini_hochberg_against_its_definition():
    p = [0.01, 0.04, 0.03, 0.2, 0.002]
    m = len(p)
    ranked = sorted(p)
    expected = {q: min(min(ranked[j] * m / (j + 1) for j in range(i, m)), 1.0)
                for i, q in enumerate(ranked)}  # fmt: skip
    assert benjamini_hochberg(p) == pytest.approx([expected[q] for q in p])


def test_one_configuration_reads_not_tested_and_leaves_the_family():
    same = frozenset({frozenset({"mim", "mod"})})
    scope = Scope("city", section(CLEAR, FORGETTING), same_configuration=same)
    judged = judge_all([scope])
    fim = [c for c in judged if c.claim == "2" and c.counted]
    assert {c.verdict for c in fim} == {"not tested"} and all(c.p_adjusted is None for c in fim)
    assert combine([c.verdict for c in fim]) == "not tested"
    text = "\n".join(claims([scope]))
    assert "- 2. the FIM loss helps: not tested on city" in text
    row = claims_json([scope])[-2]
    assert row["difference"] == "mim - mod-random" and row["verdict"] != "not tested"


def city_summary(method: str, seed: int, blocks: list[float]) -> dict:
    """A city summary: per-block PSNR rising 1 dB per doubling, the pooled curve their mean."""
    segment_curve = {str(2**k): [b + k for b in blocks] for k in range(4)}
    curve = {step: sum(v) / len(v) for step, v in segment_curve.items()}
    matrix = [[b if j <= i else None for j, b in enumerate(blocks)] for i in range(len(blocks))]
    return {"method": method, "curve": curve, "segment_curve": segment_curve,
            "segment_matrix": matrix, "psnr_step1": curve["1"], "psnr_last": curve["8"],
            "ssim_last": 0.5, "forgetting": 0.0}  # fmt: skip


def test_the_city_is_judged_on_its_never_meta_trained_blocks():
    """mod's gain over mod-random is large on the blocks theta_0 was meta-trained on (0, 1) and
    absent on the held-out ones (2, 3): judged there, claim 1a is not "holds"."""
    luck = {0: 0.0, 1: 0.4, 2: -0.3}
    blocks = {"mod": lambda v: [25 + v, 25 + v, 20 + v, 20.1 + v],
              "mod-random": lambda v: [18 + v, 18 + v, 20, 20]}  # fmt: skip
    summaries = {m: {s: city_summary(m, s, per(v)) for s, v in luck.items()}
                 for m, per in blocks.items()}  # fmt: skip
    held = {m: {s: on_segments(x, [2, 3]) for s, x in by.items()} for m, by in summaries.items()}
    assert held["mod"][0]["curve"]["1"] == pytest.approx(20.05)
    assert held["mod"][0]["ssim_last"] is None and held["mod"][0]["forgetting"] == 0.0
    scopes = [Scope("city", held, "blocks 2, 3", ("2", "3")),
              Scope("city", summaries, "blocks 0-3", ("0", "1", "2", "3"),
                    counted=False)]  # fmt: skip
    judged = [
        c for c in judge_all(scopes) if (c.claim, c.better, c.worse) == ("1a", "mod", "mod-random")
    ]
    primary = [c for c in judged if c.counted]
    assert primary and all(c.verdict != "holds" for c in primary)
    assert all(c.verdict == "holds" for c in judged if not c.counted)  # all blocks: flattered
    assert claims_json(scopes)[0]["judged_items"] == ["2", "3"]
