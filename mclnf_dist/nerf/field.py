"""A radiance field on the core's stacked modules: rays in, volume-rendered colours out.

:class:`RadianceFieldConfig` implements the *field interface* of
:mod:`mclnf_dist.fields.stacked_mlp` (``mlp``, ``samples_per_item``, ``rows_per_chunk``,
``mlp_inputs``, ``outputs``), so the inner loop, the FIM loss, meta-gradients and adaptation run
on rays unchanged: a loss sample is a ray, and each ray puts ``K`` points through the MLP.

Ray layout, stated once: an input row is a packed ray of 8 floats (:func:`pack_rays`)::

    [ origin x, y, z | unit direction x, y, z | near | far ]      (world units, e.g. metres)

and its target is the ray's rgb in [0, 1]. ``S`` stratified depths in ``[near, far)``, plus ``N``
hierarchical ones when ``num_importance_samples = N > 0`` (``K = S + N``), or ``S`` depths drawn
from a proposal network's weights (a grid field's ``grid.proposal``), give the sample points,
which are mapped to ``[-1, 1]^3`` with ``scene_box`` before the MLP (bounds should be clipped to the
box, :func:`mclnf_dist.nerf.rays.near_far_from_box`). :func:`sample_points` and :func:`composite`
are the one rendering path: training (:meth:`RadianceFieldConfig.mlp_inputs`) and images
(:func:`mclnf_dist.nerf.render.render_rays_routed`) both go through them. The MLP maps a point to 4
raw channels: density ``softplus(raw_0 + density_bias)`` and colour ``sigmoid(raw_1..3)``
(view-independent: the procedural city is Lambertian). Densities are per unit of *normalised* length
(world length * 2 / largest box side), so one initialisation behaves the same in any scene units.
Compositing is :func:`mclnf_dist.nerf.compositing.volume_render` over ``background`` (the sky).
Every operation is out of place, so second-order MAML differentiates through it.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mclnf_dist.config import AnyFloat, NonNegativeFloat, NonNegativeInt, PositiveInt, UnitFloat
from mclnf_dist.config_rules import box_problem, cross_field_rule
from mclnf_dist.fields.grid_field import (
    GridFieldConfig,
    ProposalConfig,
    activate_density,
    grid_field_raw,
    init_appearance_codes,
    init_grid_params,
    proposal_density,
)
from mclnf_dist.fields.hash_grid import HashGridConfig
from mclnf_dist.fields.stacked_mlp import FieldConfig, Params, init_params, mlp_forward
from mclnf_dist.nerf.compositing import volume_render
from mclnf_dist.nerf.sampling import (
    distortion_loss,
    hierarchical_samples,
    interlevel_loss,
    sample_pdf,
    stratified_samples,
)

RAY_FEATURES = 8
"""Floats per packed ray: origin (3), unit direction (3), near (1), far (1)."""
POINT_FEATURES, RAW_CHANNELS = 3, 4

Point = tuple[AnyFloat, AnyFloat, AnyFloat]
Box = tuple[Point, Point]
UNIT_BOX: Box = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
RawFn = Callable[[Tensor, Tensor], Tensor]
"""``raw_fn(points (R, K, 3) world coordinates, directions (R, 3)) -> (R, K, 4)`` raw outputs."""
DensityFn = Callable[[Tensor], Tensor]
"""``density_fn(points (R, S, 3) world coordinates) -> (R, S)`` densities (a proposal's)."""
RadianceKind = Literal["mlp", "hash_grid"]


def default_grid() -> GridFieldConfig:
    """A CPU-sized instant-ngp field: 8 levels of 2^17 x 4 features from 16 to 1024 cells per
    box side (the same 32 features and 16 MB a module as instant-ngp's 16 x 2, in half the
    lookups), 64-wide MLPs, degree-4 SH colour.

    Why 8 x 4: a CPU step is bound by the encoding's gathers and scatters, one per level and
    corner. On the fox at 1/4 (random init, 1000 steps of 1024 rays, held-out full images,
    ``bench/field_table.py``) 8 x 4 reached 19.75 dB in 93 s where 16 x 2 reached 19.84 in
    138 s; 2^18 entries (19.62) and 24 samples (19.66 in 74 s) gained nothing."""
    grid = HashGridConfig(
        levels=8, log2_table_size=17, features_per_level=4, base_resolution=16,
        finest_resolution=1024,
    )  # fmt: skip
    return GridFieldConfig(grid=grid)


def default_mlp() -> FieldConfig:
    """ReLU MLP on 8 octaves of Fourier features: NeRF's recipe, scaled to a city block.

    8 octaves resolve about 1/128 of the box side (1.4 m in the 180 m box of a 2x2 city: windows,
    street tiles). SIREN works through the same interface (``kind="siren"``), untuned here.
    """
    return FieldConfig(kind="relu_pe", depth=4, width=128, pe_frequencies=8, output_offset=0.0)


@dataclass
class RadianceFieldConfig:
    """A NeRF whose inputs are packed rays (M, n, 8) and whose predictions are rgb (M, n, 3)."""

    kind: RadianceKind = "mlp"
    """The network behind every module: ``mlp`` (``mlp``: view-independent, positional encoding
    or SIREN) or ``hash_grid`` (``grid``: multi-resolution hash encoding, density MLP, colour MLP
    on the view direction; instant-ngp / nerfacto)."""
    mlp: FieldConfig = field(default_factory=default_mlp)
    """``kind=mlp``: the per-point MLP (3 normalised coordinates -> density + rgb)."""
    grid: GridFieldConfig = field(default_factory=default_grid)
    """``kind=hash_grid``: the grid field (point and direction -> density + rgb)."""
    appearance_images: NonNegativeInt = 0
    """Training images with an appearance code of their own (``grid.appearance_features > 0``):
    ray ``image`` ids index them; a ray without one (a held-out view, any render) takes the
    mean code (set from the scene by the city job)."""
    num_samples: PositiveInt = 48
    """S: stratified samples per ray (about 1.5 m apart on an aerial ray through a city block)."""
    num_importance_samples: NonNegativeInt = 0
    """N: extra samples per ray drawn from the S samples' rendering weights (NeRF's hierarchical
    sampling; the same network makes the detached coarse pass), so thin surfaces get points where
    the mass is. 0: stratified samples only."""
    perturb: bool = True
    """Jitter samples inside their bins (training); evaluation uses :meth:`for_evaluation`."""
    scene_box: Box | None = None
    """(min corner, max corner) in world units, points are normalised with it; None: the scene's
    (:func:`field_for_scene`), else [-1, 1]^3. Given, it wins over the scene's own box."""
    background: tuple[UnitFloat, UnitFloat, UnitFloat] = (1.0, 1.0, 1.0)
    """Colour behind the volume (the city's sky); white as in Blender by default."""
    density_bias: AnyFloat = -3.0
    """Added to the raw density before the softplus: an untrained field starts nearly transparent
    (a few % opacity through a city box), i.e. renders the sky, instead of saturating early.
    Chosen on the demo city's validation views with the outer rate
    (``docs/results/defaults/city.md``)."""

    seam_margin: UnitFloat = 0.0
    """Blended block seams in routed rendering (Mega-NeRF): a sample whose distance to another
    block's centroid is within ``seam_margin`` block sizes of its nearest centroid's gets the
    blend of those blocks' modules (inverse-distance weights with a taper,
    :meth:`~mclnf_dist.scenes.partition.BlockPartition.blend_points`; densities blended, colours
    density-weighted). The blend band is ``seam_margin`` block sizes wide around each boundary; keep
    it inside the partition's overlap (``seam_margin <= 2 * overlap``) so both modules were trained
    there. 0: hard routing, every sample from its nearest block's module (bit for bit)."""
    contraction: bool = False
    """Unbounded scenes (a street, the room around a filmed object): rays run from the scene's
    near to its far bound instead of stopping at the box, half of their samples spaced evenly
    inside the box and half evenly in disparity beyond it, and points outside the box are
    contracted into a shell as wide again (mip-NeRF 360's contraction, max-norm as nerfacto
    does for grids), so the field also learns what lies beyond the box. False: the box bounds
    the scene and whatever lies beyond renders as ``background``."""

    box_for_cut_outs: bool = False
    """A scene whose images are objects cut out on a background (transparent pixels: Blender's
    renders) keeps the box and stratified samples (as many a ray as the proposal drew), without
    contraction or proposal, whatever those settings say
    (:func:`~mclnf_dist.city.data.field_for_capture`).
    Why: its rays past the object are empty by construction, and in a contraction the shell
    near the cameras takes floaters of the background's colour that match the training views
    and hide the object in new ones (a generated object scene, ``scene-quick``: 24.49 dB
    contracted against 26.89 in the box)."""
    distortion_loss_weight: NonNegativeFloat = 0.0
    """Weight of mip-NeRF 360's distortion loss (:func:`~mclnf_dist.nerf.sampling.distortion_loss`)
    added to every ray's loss: it pulls a ray's rendering weight into one compact interval, so the
    field makes surfaces rather than the view-dependent haze that fits the training views and
    fails on new ones. 0: off."""

    @property
    def box(self) -> Box:
        """The scene box in use (``scene_box``, or [-1, 1]^3 when unset)."""
        return self.scene_box if self.scene_box is not None else UNIT_BOX

    @property
    def samples_per_item(self) -> int:
        """K = S + N: MLP rows per ray (what the FIM's Gram-matrix Fisher groups)."""
        return self.num_samples + self.num_importance_samples

    @property
    def rows_per_chunk(self) -> int:
        """Rays per stacked call, so one call holds about the network's ``rows_per_chunk``."""
        points = self.grid.rows_per_chunk if self.kind == "hash_grid" else self.mlp.rows_per_chunk
        return max(1, points // self.samples_per_item)

    @property
    def linear_layers(self) -> int:
        """Linear layers of a module's network (what OML's ``head_layers`` counts from the end):
        the MLP's depth, or the grid field's density (2) and colour MLP layers."""
        if self.kind == "hash_grid":
            return 2 + self.grid.colour_hidden_layers + 1
        return self.mlp.depth

    @property
    def uses_proposal(self) -> bool:
        """True when a proposal network places the samples (``grid.proposal.samples > 0``)."""
        return self.kind == "hash_grid" and self.grid.proposal.samples > 0

    @property
    def appearance(self) -> bool:
        """True when the field learns a code per training image (NeRF-W, Block-NeRF)."""
        return self.kind == "hash_grid" and self.grid.appearance_features > 0

    @property
    def input_features(self) -> int:
        """Features of a network input row: the normalised point (3), for a grid field the unit
        viewing direction (3 more) and, with appearance codes, the ray's image id (1 more)."""
        if self.kind != "hash_grid":
            return POINT_FEATURES
        return 7 if self.appearance else 6

    def network(
        self, params: Params, inputs: Tensor, cache: list[tuple[Tensor, Tensor]] | None = None
    ) -> Tensor:
        """(M, P, :attr:`input_features`) -> (M, P, 4) raw outputs (see :func:`composite`), in
        the inputs' dtype (under bf16 autocast the matrix products run in bf16; rendering
        stays in float32)."""
        if self.kind == "hash_grid":
            unit = (inputs[..., :3] + 1.0) * 0.5  # the grid's [0, 1]^3
            codes = appearance_codes(params, inputs[..., 6]) if self.appearance else None
            raw = grid_field_raw(self.grid, params, unit, inputs[..., 3:6], codes, cache)
        else:
            raw = mlp_forward(self.mlp, params, inputs, cache)
        return raw.to(inputs.dtype)

    def proposal_network(self, params: Params, inputs: Tensor) -> Tensor:
        """(M, P, >= 3) normalised points (``network_inputs``' first columns) -> (M, P) proposal
        densities (per normalised length, as the field's)."""
        density = proposal_density(self.grid, params, (inputs[..., :3] + 1.0) * 0.5)
        return density.to(inputs.dtype)

    def network_inputs(
        self, points: Tensor, directions: Tensor, image: Tensor | None = None
    ) -> Tensor:
        """(R, K, 3) world points, (R, 3) unit directions, (R,) image ids (None or -1: none)
        -> (R, K, :attr:`input_features`)."""
        normalised = normalise_points(self, points)
        if self.kind != "hash_grid":
            return normalised
        parts = [normalised, directions[:, None, :].expand_as(points)]
        if self.appearance:
            ids = image if image is not None else points.new_full(points.shape[:1], -1.0)
            parts.append(ids.to(points.dtype)[:, None, None].expand(*points.shape[:2], 1))
        return torch.cat(parts, dim=-1)

    def for_evaluation(self) -> "RadianceFieldConfig":
        """The same field with deterministic samples (no jitter)."""
        return dataclasses.replace(self, perturb=False)

    def mlp_inputs(self, x: Tensor, params: Params | None = None) -> tuple[Tensor, "RayAux"]:
        """(M, n, 8) packed rays -> ((M, n*K, F) network inputs, what :meth:`outputs` needs).

        ``params`` (M or 1 modules) make the coarse pass of hierarchical sampling or the
        proposal pass (module ``m`` for the rays of row ``m``); only needed when
        ``num_importance_samples > 0`` or :attr:`uses_proposal`. The proposal pass keeps its
        graph: :meth:`penalised_outputs` trains the proposal with the interlevel loss.
        """
        modules, rays = x.shape[0], x.shape[1]
        if (self.uses_proposal or self.num_importance_samples > 0) and params is None:
            raise ValueError("placing samples needs the parameters for the proposal/coarse pass")

        def coarse_raw(points: Tensor, directions: Tensor) -> Tensor:  # (M*n, S, 3) -> 4 raw
            inputs = self.network_inputs(points, directions)
            inputs = inputs.reshape(modules, -1, self.input_features)
            return self.network(params, inputs).reshape(*points.shape[:-1], RAW_CHANNELS)

        def proposal(points: Tensor) -> Tensor:  # (M*n, S, 3) -> (M*n, S) densities
            inputs = normalise_points(self, points).reshape(modules, -1, POINT_FEATURES)
            return self.proposal_network(params, inputs).reshape(points.shape[:-1])

        flat = x.reshape(-1, x.shape[-1])  # 8 features, or 9 with the image id
        image = flat[:, RAY_FEATURES] if flat.shape[-1] > RAY_FEATURES else None
        coarse = None
        if self.uses_proposal:
            t_vals, points, coarse = proposal_samples(self, flat, proposal)
        else:
            t_vals, points = sample_points(self, flat, coarse_raw)  # (M*n, K), (M*n, K, 3)
        inputs = self.network_inputs(points, flat[:, 3:6], image)
        inputs = inputs.reshape(modules, -1, self.input_features)
        return inputs, RayAux(t_vals, x[..., 7].reshape(-1), modules, rays, coarse)

    def outputs(self, raw: Tensor, aux: "RayAux") -> Tensor:
        """(M, n*K, 4) raw MLP outputs -> (M, n, 3) composited rgb."""
        return self.penalised_outputs(raw, aux)[0]

    def penalised_outputs(self, raw: Tensor, aux: "RayAux") -> tuple[Tensor, Tensor | None]:
        """(M, n*K, 4) raw MLP outputs -> (M, n, 3) composited rgb and the (M, n) per-ray loss
        to add to the colour loss: with a proposal network, its weighted interlevel loss
        (:func:`~mclnf_dist.nerf.sampling.interlevel_loss`), plus the weighted distortion loss
        when ``distortion_loss_weight > 0``; None when neither applies."""
        raw = raw.reshape(aux.modules * aux.rays, self.samples_per_item, RAW_CHANNELS)
        out = composite(self, raw, aux.t_vals, aux.far)
        rgb = out["rgb"].reshape(aux.modules, aux.rays, 3)
        if aux.proposal is None and self.distortion_loss_weight == 0:
            return rgb, None
        edges = torch.cat([aux.t_vals, aux.far[:, None]], dim=-1)
        penalty = torch.zeros_like(aux.far)
        if aux.proposal is not None:
            penalty = self.grid.proposal.loss_weight * interlevel_loss(
                edges, out["weights"], *aux.proposal
            )
        if self.distortion_loss_weight > 0:
            penalty = penalty + self.distortion_loss_weight * distortion_loss(edges, out["weights"])
        return rgb, penalty.reshape(aux.modules, aux.rays)


@cross_field_rule(RadianceFieldConfig)
def box_not_empty(cfg: RadianceFieldConfig, prefix: str) -> str | None:
    return box_problem(f"{prefix}scene_box", cfg.scene_box)


@cross_field_rule(RadianceFieldConfig)
def one_way_to_place_samples(cfg: RadianceFieldConfig, prefix: str) -> str | None:
    if cfg.uses_proposal and cfg.num_importance_samples > 0:
        return (
            f"{prefix}grid.proposal.samples > 0 places the samples with a proposal network; "
            f"{prefix}num-importance-samples must be 0 with it (got "
            f"{cfg.num_importance_samples})"
        )
    return None


class RayAux(NamedTuple):
    """What compositing needs besides the MLP outputs."""

    t_vals: Tensor
    """(R, K) world depths of the samples, R = M * n."""
    far: Tensor
    """(R,) far bound of every ray (end of the last sample's interval)."""
    modules: int
    rays: int
    proposal: tuple[Tensor, Tensor] | None = None
    """With a proposal network: its (R, S+1) interval edges and (R, S) weights (with graph)."""


def pack_rays(
    origins: Tensor,
    directions: Tensor,
    near: Tensor | float,
    far: Tensor | float,
    image: Tensor | None = None,
) -> Tensor:
    """(..., 3), (..., 3), near/far scalars or (...,) -> (..., 8) packed rays (module docstring);
    with ``image`` (...,) training-image ids, a 9th column (what appearance codes index)."""
    lead = origins.shape[:-1]
    near_t = torch.as_tensor(near, dtype=origins.dtype, device=origins.device).expand(lead)
    far_t = torch.as_tensor(far, dtype=origins.dtype, device=origins.device).expand(lead)
    columns = [origins, directions, near_t[..., None], far_t[..., None]]
    if image is not None:
        columns.append(image.to(origins.dtype)[..., None])
    return torch.cat(columns, dim=-1)


def appearance_codes(params: Params, image: Tensor) -> Tensor:
    """(M, P) image ids (float; < 0 or unknown: none) -> (M, P, A) appearance codes.

    ``params["appearance_codes"]`` (M or 1, I, A) holds one code per training image; a point of
    a ray with no training image (a held-out view, a render) gets the mean code of the module's
    images: the appearance of an average training image (NeRF-W's simplest evaluation).
    """
    table = params["appearance_codes"]
    table = table.expand(image.shape[0], *table.shape[1:]) if table.shape[0] == 1 else table
    count = table.shape[1]
    extended = torch.cat([table, table.mean(1, keepdim=True)], dim=1)  # (M, I + 1, A)
    ids = image.round().long()
    ids = torch.where((ids >= 0) & (ids < count), ids, torch.full_like(ids, count))
    return torch.gather(extended, 1, ids[..., None].expand(*ids.shape, table.shape[-1]))


def unpack_rays(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(..., 8) -> origins (..., 3), directions (..., 3), near (...), far (...)."""
    return x[..., 0:3], x[..., 3:6], x[..., 6], x[..., 7]


def sample_points(
    cfg: RadianceFieldConfig,
    rays: Tensor,
    coarse_raw: RawFn | None = None,
    activated: bool = False,
    proposal: DensityFn | None = None,
) -> tuple[Tensor, Tensor]:
    """(R, 8) packed rays -> (R, K) sorted world depths and (R, K, 3) world points.

    ``S`` stratified depths; with ``cfg.num_importance_samples = N > 0`` the field's raw outputs
    at them (``coarse_raw``, evaluated without gradients) give rendering weights, and ``N`` more
    depths are drawn from those weights and merged in (``K = S + N``). ``activated``:
    ``coarse_raw`` gives density and colour already activated (see :func:`composite`). With a
    proposal network (``cfg.uses_proposal``) the ``S`` depths come from ``proposal``'s densities
    instead (:func:`proposal_samples`, evaluated without gradients here).
    """
    if cfg.uses_proposal:
        if proposal is None:
            raise ValueError("a field with a proposal network needs its densities to sample")
        with torch.no_grad():
            t_vals, points, _ = proposal_samples(cfg, rays, proposal)
        return t_vals, points
    origins, directions, _, far = unpack_rays(rays)
    t_vals = initial_depths(cfg, rays, cfg.num_samples)
    if cfg.num_importance_samples > 0:
        if coarse_raw is None:
            raise ValueError("num_importance_samples > 0 needs the field's coarse outputs")
        with torch.no_grad():
            coarse = origins[:, None, :] + t_vals[..., None] * directions[:, None, :]
            fields = coarse_raw(coarse, directions)
            weights = composite(cfg, fields, t_vals, far, activated)["weights"]
        t_vals = hierarchical_samples(t_vals, weights, far, cfg.num_importance_samples, cfg.perturb)
    points = origins[:, None, :] + t_vals[..., None] * directions[:, None, :]
    return t_vals, points


def initial_depths(cfg: RadianceFieldConfig, rays: Tensor, count: int) -> Tensor:
    """(R, count) sorted depths before any look at the field: stratified in ``[near, far)``, or
    with ``cfg.contraction`` half in the box and half in disparity (:func:`unbounded_samples`)."""
    origins, directions, near, far = unpack_rays(rays)
    if cfg.contraction:
        t_vals = unbounded_samples(cfg, origins, directions, near, far, count)
    else:
        t_vals = stratified_samples(near, far, count, rays.shape[0], cfg.perturb)
    return t_vals.to(rays.dtype)


def proposal_samples(
    cfg: RadianceFieldConfig, rays: Tensor, proposal: DensityFn
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
    """(R, 8) packed rays -> the field's (R, S) depths and (R, S, 3) points, drawn from the
    proposal's rendering weights at ``cfg.grid.proposal.samples`` initial depths, and those
    weights' (R, P+1) interval edges and (R, P) weights (with the proposal's graph, which the
    interlevel loss trains). The field sees only the drawn depths (nerfacto), so ``S`` field
    evaluations per ray are all spent where the proposal puts the mass."""
    origins, directions, _, far = unpack_rays(rays)
    coarse_t = initial_depths(cfg, rays, cfg.grid.proposal.samples)
    points = origins[:, None, :] + coarse_t[..., None] * directions[:, None, :]
    density = proposal(points)
    scale = length_scale(cfg)
    colour = density.new_zeros(*density.shape, 3)
    weights = volume_render(density, colour, coarse_t * scale, None, far * scale)["weights"]
    edges = torch.cat([coarse_t, far[:, None]], dim=-1)
    t_vals = sample_pdf(edges.detach(), weights.detach(), cfg.num_samples, cfg.perturb)
    points = origins[:, None, :] + t_vals[..., None] * directions[:, None, :]
    return t_vals, points, (edges.detach(), weights)


def box_tensors(cfg: RadianceFieldConfig, like: Tensor) -> tuple[Tensor, Tensor]:
    """(3,) min corner and (3,) max corner of the scene box, on ``like``'s device and dtype."""
    box = torch.tensor(cfg.box, dtype=like.dtype, device=like.device)
    return box[0], box[1]


def normalise_points(cfg: RadianceFieldConfig, points: Tensor) -> Tensor:
    """(..., 3) world points -> (..., 3) in [-1, 1] inside the scene box (per axis); with
    ``cfg.contraction`` the box fills [-1/2, 1/2] and all beyond it the rest (:func:`contract`)."""
    low, high = box_tensors(cfg, points)
    inside = (points - low) * (2.0 / (high - low)) - 1.0
    return contract(inside) * 0.5 if cfg.contraction else inside


def contract(x: Tensor) -> Tensor:
    """(..., 3) box coordinates ([-1, 1] is the box) -> (..., 3) in [-2, 2]: the identity inside
    the box, ``(2 - 1/|x|) x/|x|`` (max-norm ``|x|``) outside; continuous, infinity maps to 2."""
    norm = x.abs().amax(-1, keepdim=True)
    outside = (2.0 - 1.0 / norm.clamp_min(1.0)) * x / norm.clamp_min(1.0)
    return torch.where(norm <= 1.0, x, outside)


def unbounded_samples(
    cfg: RadianceFieldConfig,
    origins: Tensor,
    directions: Tensor,
    near: Tensor,
    far: Tensor,
    count: int | None = None,
) -> Tensor:
    """(R, S) sorted depths in [near, far): half stratified from near to where the ray leaves
    the box, half stratified in disparity (1/t) from there to far (nerfacto's linear-disparity
    sampler with the box as its linear part)."""
    from mclnf_dist.nerf.rays import near_far_from_box  # rays build on this module's layout

    rays = origins.shape[0]
    _, exit_t, hit = near_far_from_box(origins, directions, *cfg.box)
    exit_t = torch.where(hit, exit_t, near).clamp(min=near, max=far)
    count = cfg.num_samples if count is None else count
    inner = count // 2
    outer = count - inner
    linear = stratified_samples(0.0, 1.0, inner, rays, cfg.perturb).to(origins)
    t_inner = near[:, None] + (exit_t - near)[:, None] * linear
    start = exit_t.clamp_min(1e-6)
    fraction = stratified_samples(0.0, 1.0, outer, rays, cfg.perturb).to(origins)
    disparity = 1.0 / start[:, None] + (1.0 / far.clamp_min(1e-6) - 1.0 / start)[:, None] * fraction
    return torch.cat([t_inner, 1.0 / disparity], dim=-1)


def length_scale(cfg: RadianceFieldConfig) -> float:
    """World length -> normalised length (2 / largest box side); densities are per the latter."""
    low, high = cfg.box
    return 2.0 / max(h - lo for lo, h in zip(low, high, strict=True))


def activate(cfg: RadianceFieldConfig, raw: Tensor) -> tuple[Tensor, Tensor]:
    """(..., 4) raw outputs -> (...) density (per normalised length) and (..., 3) colour."""
    if cfg.kind == "hash_grid":
        density = activate_density(cfg.grid, raw[..., 0])
    else:
        density = F.softplus(raw[..., 0] + cfg.density_bias)
    return density, torch.sigmoid(raw[..., 1:])


def composite(
    cfg: RadianceFieldConfig, raw: Tensor, t_vals: Tensor, far: Tensor, activated: bool = False
) -> dict[str, Tensor]:
    """Volume-render raw MLP outputs.

    Args:
        raw: (R, K, 4) raw outputs at the samples; with ``activated``, channel 0 is the density
            and 1..3 the colour already (:func:`activate`'s outputs, e.g. blended at seams).
        t_vals: (R, K) world depths. far: (R,).

    Returns:
        dict ``rgb`` (R, 3), ``depth`` (R,) in world units (not divided by opacity), ``opacity``
        (R,), ``weights`` (R, K).
    """
    if activated:  # contiguous copies: the same layout as activate's outputs, the same bits after
        density, colour = raw[..., 0].contiguous(), raw[..., 1:].contiguous()
    else:
        density, colour = activate(cfg, raw)  # (R, S), (R, S, 3)
    scale = length_scale(cfg)
    background = torch.tensor(cfg.background, dtype=raw.dtype, device=raw.device)
    out = volume_render(density, colour, t_vals * scale, background, far * scale)
    out["depth"] = out["depth"] / scale
    return out


def init_radiance_params(
    cfg: RadianceFieldConfig,
    num_modules: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Params:
    """Random stacked parameters of ``num_modules`` modules (point -> 4 raw channels)."""
    if cfg.kind == "hash_grid":
        params = init_grid_params(cfg.grid, num_modules, generator, device)
        if cfg.appearance:
            images = max(1, cfg.appearance_images)  # none known: one code, the mean
            codes = init_appearance_codes(images, cfg.grid.appearance_features, generator=generator)
            params["appearance_codes"] = codes[None].repeat(num_modules, 1, 1).to(device)
        return params
    return init_params(cfg.mlp, POINT_FEATURES, RAW_CHANNELS, num_modules, generator, device)


def field_from_dict(data: dict) -> RadianceFieldConfig:
    """The :class:`RadianceFieldConfig` that ``dataclasses.asdict`` made ``data`` of (a saved
    city model's); a model saved before grid fields existed reads as ``kind=mlp``."""
    data = dict(data)
    data["mlp"] = FieldConfig(**data["mlp"])
    if "grid" in data:
        grid = dict(data["grid"])
        grid["grid"] = HashGridConfig(**grid["grid"])
        if "proposal" in grid:  # saved before proposals existed: none
            proposal = dict(grid["proposal"])
            proposal["grid"] = HashGridConfig(**proposal["grid"])
            grid["proposal"] = ProposalConfig(**proposal)
        data["grid"] = GridFieldConfig(**grid)
    for key in ("scene_box",):
        if data.get(key) is not None:
            data[key] = tuple(tuple(float(v) for v in corner) for corner in data[key])
    data["background"] = tuple(data["background"])
    return RadianceFieldConfig(**data)


def field_for_scene(scene, scene_box: Box | None = None, **overrides) -> RadianceFieldConfig:
    """A radiance field fitted to a :class:`~mclnf_dist.scenes.scene.Scene`: its box and sky.

    Args:
        scene: anything with ``scene_box`` ((2, 3) array) and ``background`` ((3,)).
        scene_box: an explicit box (e.g. ``--field.scene-box``), which wins over the scene's.
        **overrides: other :class:`RadianceFieldConfig` fields (``mlp``, ``num_samples``, ...).
    """
    if scene_box is None and scene.scene_box is None:
        raise ValueError("the scene has no scene_box; pass scene_box=")
    chosen = scene.scene_box if scene_box is None else scene_box
    box = tuple(tuple(float(v) for v in corner) for corner in chosen)
    background = tuple(float(v) for v in scene.background)
    return RadianceFieldConfig(scene_box=box, background=background, **overrides)
