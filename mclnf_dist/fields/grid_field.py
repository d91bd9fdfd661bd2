"""A stacked grid radiance field: hash encoding, density MLP, view-dependent colour MLP.

The instant-ngp / nerfacto field, one per module, ``M`` modules in one batched call::

    features = hash_encode(points)                           (M, N, L F)
    h        = density MLP(features)                         (M, N, 1 + G): L F -> 64 -> 1 + G
    density  = trunc_exp(h_0 + density_bias)                 (M, N)
    rgb      = sigmoid(colour MLP([h_1.., SH(dir), code]))   (M, N, 3): G + 16 + A -> 64 -> 64 -> 3

Parameters are a :data:`~mclnf_dist.fields.stacked_mlp.Params` dict, every tensor with the
module axis first (``M == 1`` is shared by every module row)::

    hash_tables: (M, L, 2^T, F)
    density_w{l}: (M, in_l, out_l)   density_b{l}: (M, 1, out_l)   (2 layers)
    colour_w{l}:  (M, in_l, out_l)   colour_b{l}:  (M, 1, out_l)   (colour_hidden_layers + 1)

Points are in ``[0, 1]^3`` of each module's own box (the caller normalises); directions are unit
vectors; densities are per unit of that normalised length. Appearance codes (NeRF-W,
Block-NeRF) are one row per training image in a table the caller owns and indexes
(:func:`init_appearance_codes`); held-out images use :func:`mean_appearance_code` unless the
caller fits one. All functions are pure and out of place (second-order MAML differentiates them).
"""

from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mclnf_dist.config import AnyFloat, NonNegativeFloat, NonNegativeInt, PositiveInt, Range
from mclnf_dist.fields.encodings import SH_MAX_DEGREE, spherical_harmonics
from mclnf_dist.fields.hash_grid import HashGridConfig, hash_encode, init_hash_tables
from mclnf_dist.fields.stacked_mlp import Params, linear_layers, map_module_chunks

DensityActivation = Literal["trunc_exp", "softplus"]
TRUNC_EXP_MAX = 15.0
"""``trunc_exp``'s gradient is that of ``exp(min(x, 15))`` (instant-ngp), so it cannot explode."""


def default_proposal_grid() -> HashGridConfig:
    """nerfacto's proposal grid: 5 levels of 2^16 x 2 from 16 to 256 cells per side (a coarse,
    cheap density: where along a ray the mass is, not what it looks like)."""
    return HashGridConfig(
        levels=5, log2_table_size=16, features_per_level=2, base_resolution=16,
        finest_resolution=256,
    )  # fmt: skip


@dataclass
class ProposalConfig:
    """A proposal network (mip-NeRF 360, nerfacto): a small density grid per module that says
    where along a ray the field's samples go, trained to bound the field's rendering weights
    from above (the interlevel loss), so the field's own samples are spent where the mass is."""

    samples: NonNegativeInt = 0
    """Samples per ray through the proposal density (stratified, or the contracted spacing);
    the field's ``num_samples`` are then drawn from its weights. 0: no proposal network."""
    grid: HashGridConfig = field(default_factory=default_proposal_grid)
    """The proposal's hash encoding."""
    hidden_width: PositiveInt = 16
    """Hidden width of its one-hidden-layer density MLP (nerfacto: 16)."""
    loss_weight: NonNegativeFloat = 1.0
    """Weight of the interlevel loss added to every ray's colour loss (nerfacto: 1)."""


@dataclass
class GridFieldConfig:
    """One module's grid radiance field (every module of a scene shares it)."""

    grid: HashGridConfig = field(default_factory=HashGridConfig)
    """The multi-resolution hash encoding of the points."""
    hidden_width: PositiveInt = 64
    """Hidden width of the density and the colour MLPs (instant-ngp: 64)."""
    geometry_features: PositiveInt = 15
    """G: features the density MLP hands to the colour MLP besides the density (nerfacto: 15)."""
    colour_hidden_layers: PositiveInt = 2
    """Hidden layers of the colour MLP (instant-ngp: 2)."""
    sh_degree: Annotated[int, Range(ge=1, le=SH_MAX_DEGREE)] = 4
    """Bands of the spherical-harmonics direction encoding (4: 16 coefficients)."""
    appearance_features: NonNegativeInt = 0
    """A: per-image appearance-code width (nerfacto: 32); 0: no appearance codes."""
    density_activation: DensityActivation = "trunc_exp"
    """``trunc_exp`` (instant-ngp, nerfacto) or ``softplus`` (smoother, never saturates)."""
    density_bias: AnyFloat = -1.0
    """Added to the raw density before the activation (nerfacto: -1): a fresh field is thin."""
    proposal: ProposalConfig = field(default_factory=ProposalConfig)
    """Where the samples go: a proposal network when ``proposal.samples > 0``."""
    rows_per_chunk: PositiveInt = 65536
    """Points per stacked call of :func:`grid_field_evaluate`; more modules run in chunks."""

    @property
    def colour_inputs(self) -> int:
        return self.geometry_features + self.sh_degree**2 + self.appearance_features


class TruncExp(torch.autograd.Function):
    """``exp(x)`` whose gradient is clamped as ``exp(min(x, 15))`` (instant-ngp's trunc_exp).

    The backward is made of differentiable operations, so double backward works.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=TRUNC_EXP_MAX))


def trunc_exp(x: Tensor) -> Tensor:
    return TruncExp.apply(x)


def mlp_layer_sizes(cfg: GridFieldConfig) -> dict[str, list[tuple[int, int]]]:
    """(in, out) of every linear layer of the ``density`` and ``colour`` MLPs."""
    width = cfg.hidden_width
    density = [(cfg.grid.output_features, width), (width, 1 + cfg.geometry_features)]
    colour_dims = [cfg.colour_inputs] + [width] * cfg.colour_hidden_layers + [3]
    return {"density": density, "colour": list(zip(colour_dims[:-1], colour_dims[1:], strict=True))}


def init_grid_params(
    cfg: GridFieldConfig,
    num_modules: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Params:
    """Random parameters of ``num_modules`` independent grid fields.

    Tables U(-1e-4, 1e-4) (instant-ngp); hidden layers Kaiming-uniform U(+-sqrt(6 / in)), output
    layers and biases U(+-1 / sqrt(in)) (``nn.Linear``), as the ReLU MLPs of ``stacked_mlp``.
    """
    params: Params = {"hash_tables": init_hash_tables(cfg.grid, num_modules, generator)}
    for name, sizes in mlp_layer_sizes(cfg).items():
        params.update(init_linear_layers(name, sizes, num_modules, generator))
    if cfg.proposal.samples > 0:
        params.update(init_proposal_params(cfg.proposal, num_modules, generator))
    return {k: v.to(device) for k, v in params.items()}


def proposal_layer_sizes(cfg: ProposalConfig) -> list[tuple[int, int]]:
    return [(cfg.grid.output_features, cfg.hidden_width), (cfg.hidden_width, 1)]


def init_proposal_params(
    cfg: ProposalConfig, num_modules: int = 1, generator: torch.Generator | None = None
) -> Params:
    """``proposal_tables`` (M, L, 2^T, F) and the ``proposal_w{l}``/``proposal_b{l}`` layers,
    initialised as the field's own (:func:`init_grid_params`)."""
    params: Params = {"proposal_tables": init_hash_tables(cfg.grid, num_modules, generator)}
    params.update(init_linear_layers("proposal", proposal_layer_sizes(cfg), num_modules, generator))
    return params


def init_linear_layers(
    name: str,
    sizes: list[tuple[int, int]],
    num_modules: int,
    generator: torch.Generator | None,
) -> Params:
    """``{name}_w{l}`` (M, in, out) and ``{name}_b{l}`` (M, 1, out) of a stacked ReLU MLP:
    hidden layers Kaiming-uniform U(+-sqrt(6 / in)), the output layer and biases
    U(+-1 / sqrt(in)) (``nn.Linear``); drawn layer by layer, weight before bias."""
    params: Params = {}
    for layer, (fan_in, fan_out) in enumerate(sizes):
        bound = (1.0 if layer == len(sizes) - 1 else 6.0**0.5) / fan_in**0.5
        weight = torch.rand(num_modules, fan_in, fan_out, generator=generator) * 2 - 1
        bias = torch.rand(num_modules, 1, fan_out, generator=generator) * 2 - 1
        params[f"{name}_w{layer}"] = weight * bound
        params[f"{name}_b{layer}"] = bias / fan_in**0.5
    return params


def proposal_density(cfg: GridFieldConfig, params: Params, points: Tensor) -> Tensor:
    """(M, N, 3) points in [0, 1]^3 -> (M, N) proposal densities (the field's activation)."""
    features = hash_encode(cfg.proposal.grid, params["proposal_tables"], points)
    raw = stacked_mlp(params, "proposal", 2, features)[..., 0]
    return activate_density(cfg, raw)


def stacked_mlp(
    params: Params,
    name: str,
    layers: int,
    h: Tensor,
    cache: list[tuple[Tensor, Tensor]] | None = None,
) -> Tensor:
    """(M, N, in) -> (M, N, out): ReLU MLP ``name`` (one baddbmm per layer, none after the last).

    ``cache``, if given, gets ``(layer input, pre-activation)`` of every layer (the FIM's closed
    form, :func:`mclnf_dist.meta.fim.fisher_trace`).
    """
    keys = [(f"{name}_w{layer}", f"{name}_b{layer}") for layer in range(layers)]
    return linear_layers(params, keys, h, torch.relu, cache)


def activate_density(cfg: GridFieldConfig, raw: Tensor) -> Tensor:
    shifted = raw + cfg.density_bias
    return trunc_exp(shifted) if cfg.density_activation == "trunc_exp" else F.softplus(shifted)


def density_and_geometry(
    cfg: GridFieldConfig,
    params: Params,
    points: Tensor,
    cache: list[tuple[Tensor, Tensor]] | None = None,
) -> tuple[Tensor, Tensor]:
    """(M, N, 3) points in [0, 1]^3 -> (M, N) density and (M, N, G) geometry features."""
    features = hash_encode(cfg.grid, params["hash_tables"], points)
    h = stacked_mlp(params, "density", 2, features, cache)  # (M, N, 1 + G)
    return activate_density(cfg, h[..., 0]), h[..., 1:]


def grid_density(cfg: GridFieldConfig, params: Params, points: Tensor) -> Tensor:
    """(M, N, 3) points -> (M, N) densities only (no colour MLP: sampling, occupancy)."""
    return density_and_geometry(cfg, params, points)[0]


def grid_field_forward(
    cfg: GridFieldConfig,
    params: Params,
    points: Tensor,
    directions: Tensor,
    appearance: Tensor | None = None,
    cache: list[tuple[Tensor, Tensor]] | None = None,
) -> tuple[Tensor, Tensor]:
    """Density and colour of every module's points, in one batched call.

    Args:
        cfg: the field. params: :func:`init_grid_params` layout with ``M`` (or 1) modules.
        points: (M, N, 3) in [0, 1]^3 of each module's box, row ``m`` evaluated by module ``m``.
        directions: (M, N, 3) unit viewing directions.
        appearance: (M, N, A) appearance codes (the rows of the caller's code table for each
            point's image); required when ``cfg.appearance_features > 0``, else ignored.
        cache: if given, filled with ``(layer input, pre-activation)`` of every MLP layer,
            density MLP first.

    Returns:
        (M, N) densities (>= 0) and (M, N, 3) rgb in [0, 1].
    """
    raw = grid_field_raw(cfg, params, points, directions, appearance, cache)
    return activate_density(cfg, raw[..., 0]), torch.sigmoid(raw[..., 1:])


def grid_field_raw(
    cfg: GridFieldConfig,
    params: Params,
    points: Tensor,
    directions: Tensor,
    appearance: Tensor | None = None,
    cache: list[tuple[Tensor, Tensor]] | None = None,
) -> Tensor:
    """(M, N, 4) raw outputs, before the activations: the density logit (``density_bias`` not yet
    added; :func:`activate_density` does both) and the three colour logits (sigmoid -> rgb).

    What a volume renderer that applies its own activations takes (the radiance field of
    :mod:`mclnf_dist.nerf.field`); :func:`grid_field_forward` applies them here.
    """
    features = hash_encode(cfg.grid, params["hash_tables"], points)
    h = stacked_mlp(params, "density", 2, features, cache)  # (M, N, 1 + G)
    parts = [h[..., 1:], spherical_harmonics(directions, cfg.sh_degree)]
    if cfg.appearance_features > 0:
        if appearance is None or appearance.shape[-1] != cfg.appearance_features:
            raise ValueError(
                f"the field takes (M, N, {cfg.appearance_features}) appearance codes, got "
                f"{None if appearance is None else tuple(appearance.shape)}"
            )
        parts.append(appearance.to(h.dtype))
    layers = cfg.colour_hidden_layers + 1
    colour = stacked_mlp(params, "colour", layers, torch.cat(parts, dim=-1), cache)
    return torch.cat([h[..., :1], colour], dim=-1)


def grid_field_evaluate(
    cfg: GridFieldConfig,
    params: Params,
    points: Tensor,
    directions: Tensor,
    appearance: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`grid_field_forward` in module chunks of about ``cfg.rows_per_chunk`` points (the
    same numbers, bounded memory: a call holds (M, L, N, 8) indices and weights, 100 MB per
    module at 65536 points). Speed on 2 loaded CPUs, 4 modules x 65536 points, one module per
    chunk vs one call: 85k vs 60k and 56k vs 58k points/s in two runs, i.e. within noise."""
    inputs = (points, directions) if appearance is None else (points, directions, appearance)
    return map_module_chunks(
        lambda p, *t: grid_field_forward(cfg, p, *t),
        params,
        *inputs,
        rows_per_chunk=cfg.rows_per_chunk,
    )


def init_appearance_codes(
    num_images: int,
    features: int,
    std: float = 0.1,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """(num_images, A) per-image appearance codes, N(0, std^2): small, so a fresh field's colour
    barely depends on the image. The caller indexes rows by image id."""
    return (torch.randn(num_images, features, generator=generator) * std).to(device)


def mean_appearance_code(codes: Tensor) -> Tensor:
    """(num_images, A) -> (A,) the mean code, for images that have none of their own."""
    return codes.mean(dim=0)
