"""Direction encodings: the real spherical-harmonics basis (instant-ngp, nerfstudio)."""

import torch
from torch import Tensor

SH_MAX_DEGREE = 4


def spherical_harmonics(directions: Tensor, degree: int = 4) -> Tensor:
    """The real spherical-harmonics basis of bands ``l = 0 .. degree - 1`` at unit directions.

    ``degree`` counts bands as instant-ngp's ``SphericalHarmonics`` encoding and nerfstudio's
    ``components_from_spherical_harmonics(levels=...)`` do: degree 4 gives 16 coefficients,
    ordered by band, then ``m = -l .. l`` (band 1: ``y, z, x``), no Condon-Shortley sign.

    Args:
        directions: (..., 3) unit vectors (not re-normalised).
        degree: 1 to 4.

    Returns:
        (..., degree^2) basis values.
    """
    if not 1 <= degree <= SH_MAX_DEGREE:
        raise ValueError(f"spherical-harmonics degree must be in 1..{SH_MAX_DEGREE}, got {degree}")
    x, y, z = directions.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [0.4886025119029199 * y, 0.4886025119029199 * z, 0.4886025119029199 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            1.0925484305920792 * y * z,
            0.9461746957575601 * zz - 0.31539156525252005,
            1.0925484305920792 * x * z,
            0.5462742152960396 * (xx - yy),
        ]
    if degree > 3:
        out += [
            0.5900435899266435 * y * (3 * xx - yy),
            2.890611442640554 * x * y * z,
            0.4570457994644658 * y * (5 * zz - 1),
            0.3731763325901154 * z * (5 * zz - 3),
            0.4570457994644658 * x * (5 * zz - 1),
            1.445305721320277 * z * (xx - yy),
            0.5900435899266435 * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)
