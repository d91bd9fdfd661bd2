"""NeRF components: camera rays, samplers along rays, volume rendering, the radiance field.

Pure functions on torch tensors; camera conventions are documented in :mod:`.rays`, the packed ray
layout a radiance field consumes in :mod:`.field`, routed whole-view rendering in :mod:`.render`.
"""

from mclnf_dist.nerf.compositing import LAST_DELTA, volume_render
from mclnf_dist.nerf.field import (
    RAY_FEATURES,
    RadianceFieldConfig,
    field_for_scene,
    init_radiance_params,
    pack_rays,
    unpack_rays,
)
from mclnf_dist.nerf.rays import camera_rays, near_far_from_box
from mclnf_dist.nerf.render import (
    RouteFn,
    partition_router,
    render_rays_routed,
    render_view,
)
from mclnf_dist.nerf.sampling import hierarchical_samples, sample_pdf, stratified_samples

__all__ = [
    "LAST_DELTA",
    "RAY_FEATURES",
    "RadianceFieldConfig",
    "RouteFn",
    "camera_rays",
    "field_for_scene",
    "hierarchical_samples",
    "init_radiance_params",
    "near_far_from_box",
    "pack_rays",
    "partition_router",
    "render_rays_routed",
    "render_view",
    "sample_pdf",
    "stratified_samples",
    "unpack_rays",
    "volume_render",
]
