"""NeRF components: camera rays, samplers along rays, volume rendering.

Pure functions on torch tensors; ray layout and conventions are documented in :mod:`.rays`.
"""

from mclnf_dist.nerf.rays import camera_rays, near_far_from_box
from mclnf_dist.nerf.rendering import LAST_DELTA, render_image_chunked, volume_render
from mclnf_dist.nerf.sampling import hierarchical_samples, sample_pdf, stratified_samples

__all__ = [
    "LAST_DELTA",
    "camera_rays",
    "hierarchical_samples",
    "near_far_from_box",
    "render_image_chunked",
    "sample_pdf",
    "stratified_samples",
    "volume_render",
]
