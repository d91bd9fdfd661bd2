"""How far estimated camera poses are from reference ones, up to the similarity transform that
structure from motion cannot fix (its world's scale, rotation and origin are its own)."""

from dataclasses import dataclass

import numpy as np


def similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, rotation, translation) minimising ``|target - (s R source + t)|`` over (N, 3)
    points (Umeyama 1991; a reflection is never returned)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, d, vt = np.linalg.svd(b.T @ a / len(source))
    sign = np.eye(3)
    sign[2, 2] = np.sign(np.linalg.det(u @ vt))
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / a.var(0).sum())
    return scale, rotation, mu_t - scale * rotation @ mu_s


@dataclass(frozen=True)
class PoseErrors:
    """Per camera both poses name, after aligning the estimated centres to the reference ones."""

    names: list[str]
    centre: np.ndarray
    """Camera-centre distance as a share of the reference cameras' extent (bounding diagonal)."""
    degrees: np.ndarray
    """Angle of the rotation between the aligned estimated and the reference orientation."""


def pose_errors(estimated: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> PoseErrors:
    """Errors of the (4, 4) camera-to-world poses of ``estimated`` against ``reference`` on the
    names both hold."""
    names = sorted(set(estimated) & set(reference))
    mine = np.stack([estimated[n] for n in names])
    truth = np.stack([reference[n] for n in names])
    scale, rotation, shift = similarity(mine[:, :3, 3], truth[:, :3, 3])
    centres = scale * mine[:, :3, 3] @ rotation.T + shift
    size = np.linalg.norm(np.ptp(truth[:, :3, 3], axis=0))
    centre = np.linalg.norm(centres - truth[:, :3, 3], axis=1) / size
    relative = np.einsum("ij,njk->nik", rotation, mine[:, :3, :3])
    cos = (np.einsum("nij,nij->n", relative, truth[:, :3, :3]) - 1) / 2
    return PoseErrors(names, centre, np.degrees(np.arccos(np.clip(cos, -1, 1))))
