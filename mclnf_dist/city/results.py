"""Typed results of the city job's block phase and of an ``--extend`` run, as they pass from
:mod:`mclnf_dist.city.blocks` to the job; ``to_json`` gives their entries in ``results.json`` and
``extension.json``."""

from dataclasses import dataclass
from typing import Any, TypedDict


@dataclass(frozen=True)
class InitScores:
    """One init's city model after block training, scored on full held-out images."""

    heldout_image_psnr: float
    heldout_image_ssim: float
    per_image: list[dict]
    """``{"image", "psnr", "ssim"}`` per held-out view."""
    per_block_psnr: dict[int, float]
    """Block id -> PSNR (dB) of the held-out pixels that end in that block."""
    probe_curve: dict[int, float]
    """Step -> probe PSNR averaged over blocks."""
    train_seconds: float
    """Block-training seconds summed over its blocks."""

    def to_json(self) -> dict[str, Any]:
        return {
            "heldout_image_psnr": self.heldout_image_psnr,
            "heldout_image_ssim": self.heldout_image_ssim,
            "per_image": self.per_image,
            "per_block_psnr": {str(b): v for b, v in self.per_block_psnr.items()},
            "probe_curve": {str(s): v for s, v in self.probe_curve.items()},
            "train_seconds": self.train_seconds,
        }


@dataclass(frozen=True)
class BlockPhaseResult:
    """What the block phase hands the job: every init's scores, same budget for each."""

    steps: int
    batch_rays: int
    inits: dict[str, InitScores]
    steps_to_reach_other_final: dict[str, int | None] | None
    """With two inits: the first step each reaches the other's final probe PSNR (None: never)."""

    def to_json(self) -> dict[str, Any]:
        """The ``block_training`` entry of ``results.json``."""
        out: dict[str, Any] = {
            "steps": self.steps,
            "batch_rays": self.batch_rays,
            "inits": {name: scores.to_json() for name, scores in self.inits.items()},
        }
        if self.steps_to_reach_other_final is not None:
            out["steps_to_reach_other_final"] = self.steps_to_reach_other_final
        return out


@dataclass(frozen=True)
class ExtensionResult:
    """An ``--extend`` run: the model it extended, the blocks kept, the new blocks' phase."""

    extended: str
    """``<city_model folder>/<name>`` of the model extended."""
    kept_blocks: list[int]
    blocks: BlockPhaseResult

    def to_json(self) -> dict[str, Any]:
        """``extension.json``: the block phase's entries beside the two above."""
        return {"extended": self.extended, "kept_blocks": self.kept_blocks, **self.blocks.to_json()}


class CityRunReport(TypedDict, total=False):
    """``results.json`` of a full city run, as :func:`~mclnf_dist.jobs.city.run_city` returns it
    (JSON values: what the report and the tests read)."""

    machine: dict[str, Any]
    config: dict[str, Any]
    blocks: dict[str, list[int]]
    """``order``, ``meta_trained``, ``held_out``."""
    held_out_blocks: dict[str, dict[str, float | None]]
    """Per method: PSNR on the never-meta-trained blocks at step 1 and at the last step."""
    results: list[dict[str, Any]]
    """Per method: :meth:`~mclnf_dist.evaluation.protocol.MethodResult.summary`."""
    block_training: dict[str, Any] | None
    """:meth:`BlockPhaseResult.to_json`; None when no block phase ran."""
    overlap_fraction: float
    meta_training_rays: dict[str, Any]
    mlflow_run_id: str
    run_folder: str
    output_dir: str


class ExtensionReport(TypedDict, total=False):
    """``extension.json`` of an ``--extend`` run plus its MLflow run and folder."""

    extended: str
    kept_blocks: list[int]
    steps: int
    batch_rays: int
    inits: dict[str, Any]
    steps_to_reach_other_final: dict[str, int | None]
    mlflow_run_id: str
    run_folder: str
