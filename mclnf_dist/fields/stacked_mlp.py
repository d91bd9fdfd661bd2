"""Stacked coordinate MLPs: ``M`` modules held as one parameter set, evaluated in one batched call.

Parameters are a plain dict of tensors with a leading module axis::

    w{l}: (M, in_l, out_l)     b{l}: (M, 1, out_l)

so layer ``l`` of all modules is one ``baddbmm`` over inputs ``(M, n, in_l)``. The same layout
serves every case in the project: the segments of one signal (one module each), the many
(signal, segment) tasks of a meta-batch, and a shared network copied once per held-out signal.
The functions are pure (params in, tensors out) so that ``torch.autograd.grad`` with
``create_graph=True`` gives second-order MAML for free.

Execution path: one stacked call is fastest while the activations of all modules fit in cache; at
thousands of coordinates per module every layer streams tens of MB through memory and a CPU step
becomes 1.6x slower than a loop over modules (measured in ``bench/stacked_modules.py``). So
:func:`map_module_chunks` runs the *whole* network on chunks of modules holding about
``rows_per_chunk`` coordinates, a single chunk for small inputs (pure stacking) and one module per
chunk for large ones. Modules are independent, so chunking changes no number.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, TypeVar, get_args

import torch
from torch import Tensor

from mclnf_dist.config import AnyFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range

Params = dict[str, Tensor]
T = TypeVar("T")
FieldKind = Literal["siren", "relu_pe"]
FIELD_KINDS = get_args(FieldKind)


@dataclass
class FieldConfig:
    """Architecture of one module (every module of a signal shares it)."""

    kind: FieldKind = "siren"
    """``siren`` (sine activations) or ``relu_pe`` (ReLU MLP on Fourier features)."""
    depth: Annotated[int, Range(ge=2)] = 4
    """Number of linear layers (the paper's image setting uses 5)."""
    width: PositiveInt = 64
    """Hidden width (the paper's image setting uses 256)."""
    w0: PositiveFloat = 30.0
    """SIREN frequency of every sine layer (first-layer init follows Sitzmann et al.)."""
    pe_frequencies: NonNegativeInt = 8
    """``relu_pe`` only: number of octaves of the sin/cos positional encoding."""
    output_offset: AnyFloat = 0.5
    """Added to the last layer so an untrained field predicts mid-grey (values live in [0, 1])."""
    rows_per_chunk: PositiveInt = 8192
    """Coordinates evaluated per stacked call; modules beyond it run in chunks (see module doc)."""

    # The field interface shared with radiance fields (mclnf_dist.nerf.field): a coordinate
    # field's MLP sees the coordinates themselves and its prediction is the MLP's output.
    samples_per_item = 1

    @property
    def mlp(self) -> "FieldConfig":
        return self

    def mlp_inputs(self, x: Tensor, params: Params | None = None) -> tuple[Tensor, None]:
        return x, None

    def network(
        self, params: Params, inputs: Tensor, cache: list[tuple[Tensor, Tensor]] | None = None
    ) -> Tensor:
        """The stacked network on its inputs: this MLP (:func:`mlp_forward`)."""
        return mlp_forward(self, params, inputs, cache)

    def outputs(self, raw: Tensor, aux: None) -> Tensor:
        return raw + self.output_offset


def encoded_features(cfg: FieldConfig, in_features: int) -> int:
    """Width of the first layer's input after the (optional) positional encoding."""
    if cfg.kind == "relu_pe":
        return in_features * (1 + 2 * cfg.pe_frequencies)
    return in_features


def encode(cfg: FieldConfig, x: Tensor) -> Tensor:
    """(..., d) coordinates -> (..., d') first-layer inputs (identity for SIREN)."""
    if cfg.kind != "relu_pe":
        return x
    freqs = 2.0 ** torch.arange(cfg.pe_frequencies, device=x.device, dtype=x.dtype) * math.pi
    angles = (x[..., None] * freqs).flatten(-2)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


def layer_sizes(cfg: FieldConfig, in_features: int, out_features: int) -> list[tuple[int, int]]:
    """(in, out) of every linear layer."""
    if cfg.depth < 2:
        raise ValueError(f"field depth must be >= 2 linear layers, got {cfg.depth}")
    dims = [encoded_features(cfg, in_features)] + [cfg.width] * (cfg.depth - 1) + [out_features]
    return list(zip(dims[:-1], dims[1:], strict=True))


def init_params(
    cfg: FieldConfig,
    in_features: int,
    out_features: int,
    num_modules: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Params:
    """Random parameters for ``num_modules`` independent modules.

    SIREN: first layer U(-1/in, 1/in), others U(-sqrt(6/in)/w0, +sqrt(6/in)/w0) (Sitzmann et al.).
    ReLU: Kaiming-uniform-like U(-sqrt(6/in), sqrt(6/in)) hidden, U(-1/sqrt(in), ..) last.
    Biases follow ``nn.Linear``'s U(-1/sqrt(in), 1/sqrt(in)).
    """
    if cfg.kind not in FIELD_KINDS:
        raise ValueError(f"unknown field kind {cfg.kind!r} (expected one of {FIELD_KINDS})")
    params: Params = {}
    sizes = layer_sizes(cfg, in_features, out_features)
    for layer, (fan_in, fan_out) in enumerate(sizes):
        last = layer == len(sizes) - 1
        if cfg.kind == "siren":
            bound = 1.0 / fan_in if layer == 0 else math.sqrt(6.0 / fan_in) / cfg.w0
        else:
            bound = 1.0 / math.sqrt(fan_in) if last else math.sqrt(6.0 / fan_in)
        weight = torch.rand(num_modules, fan_in, fan_out, generator=generator) * 2 - 1
        bias = torch.rand(num_modules, 1, fan_out, generator=generator) * 2 - 1
        params[f"w{layer}"] = (weight * bound).to(device)
        params[f"b{layer}"] = (bias / math.sqrt(fan_in)).to(device)
    return params


def num_layers(params: Params) -> int:
    return len(params) // 2


def count_parameters(params: Params, per_module: bool = True) -> int:
    """Parameter count of one module (``per_module``) or of the whole stack."""
    total = sum(p.numel() for p in params.values())
    return total // next(iter(params.values())).shape[0] if per_module else total


def expand_params(params: Params, num_modules: int) -> Params:
    """Repeat a one-module parameter set ``num_modules`` times (differentiably)."""
    return {k: v.expand(num_modules, *v.shape[1:]) for k, v in params.items()}


def activation(cfg: FieldConfig, pre: Tensor) -> Tensor:
    return torch.sin(cfg.w0 * pre) if cfg.kind == "siren" else torch.relu(pre)


def forward(
    cfg: "FieldConfig", params: Params, x: Tensor, cache: list[tuple[Tensor, Tensor]] | None = None
) -> Tensor:
    """Evaluate all modules of a field in one stacked call.

    A field maps its inputs to MLP inputs (a coordinate field: the coordinates themselves; a
    radiance field: ``K`` sample points per ray, placed with the help of ``params`` when it samples
    hierarchically), runs the stacked MLP, and maps the raw outputs to
    predictions (a coordinate field: ``+ output_offset``; a radiance field: volume rendering).

    Args:
        cfg: the field (:class:`FieldConfig` or any object with the same members:
            ``mlp_inputs``, ``network``, ``outputs``, ``samples_per_item``, ``rows_per_chunk``).
        params: stacked parameters with ``M`` modules (``M == 1`` broadcasts over inputs).
        x: (M, n, d_in) inputs, row ``m`` routed to module ``m``.
        cache: if given, filled with ``(layer_input, pre_activation)`` of every MLP layer (a grid
            field's density and colour MLPs: its hash tables have no closed form), shapes
            ``(M, n * K, in_l)`` and ``(M, n * K, out_l)`` (what the FIM weights need).

    Returns:
        (M, n, d_out) predictions.
    """
    return forward_with_penalty(cfg, params, x, cache)[0]


def forward_with_penalty(
    cfg: "FieldConfig", params: Params, x: Tensor, cache: list[tuple[Tensor, Tensor]] | None = None
) -> tuple[Tensor, Tensor | None]:
    """:func:`forward`'s (M, n, d_out) predictions and the field's (M, n) per-item loss to add
    to the reconstruction loss (a radiance field's proposal loss), None for a field without
    one (a field that has one implements ``penalised_outputs(raw, aux)``)."""
    points, aux = cfg.mlp_inputs(x, params)
    raw = cfg.network(params, points, cache)
    penalised = getattr(cfg, "penalised_outputs", None)
    if penalised is None:
        return cfg.outputs(raw, aux), None
    return penalised(raw, aux)


def mlp_forward(
    cfg: FieldConfig, params: Params, x: Tensor, cache: list[tuple[Tensor, Tensor]] | None = None
) -> Tensor:
    """The stacked MLP: (M, P, d_in) -> (M, P, d_out) raw outputs (one baddbmm per layer)."""
    keys = [(f"w{layer}", f"b{layer}") for layer in range(num_layers(params))]
    return linear_layers(params, keys, encode(cfg, x), lambda pre: activation(cfg, pre), cache)


def linear_layers(
    params: Params,
    keys: list[tuple[str, str]],
    h: Tensor,
    hidden_activation: Callable[[Tensor], Tensor],
    cache: list[tuple[Tensor, Tensor]] | None = None,
) -> Tensor:
    """(M, P, in) -> (M, P, out) through the stacked linear layers ``keys`` ((weight, bias)
    names), ``hidden_activation`` after every layer but the last: one baddbmm per layer, a
    one-module stack broadcast over M. ``cache`` gets every layer's (input, pre-activation)."""
    for layer, (w, b) in enumerate(keys):
        weight, bias = params[w], params[b]
        if weight.shape[0] != h.shape[0]:
            weight = weight.expand(h.shape[0], *weight.shape[1:])
            bias = bias.expand(h.shape[0], *bias.shape[1:])
        pre = torch.baddbmm(bias, h, weight)
        if cache is not None:
            cache.append((h, pre))
        h = hidden_activation(pre) if layer < len(keys) - 1 else pre
    return h


def module_chunk_size(num_modules: int, rows_per_module: int, rows_per_chunk: int) -> int:
    """How many modules one stacked call takes so it holds about ``rows_per_chunk`` rows."""
    return max(1, min(num_modules, rows_per_chunk // max(1, rows_per_module)))


def map_module_chunks(
    fn: Callable[..., T], params: Params, *tensors: Tensor, rows_per_chunk: int
) -> T:
    """Apply ``fn(params, *tensors)`` to chunks of modules and concatenate the results.

    ``tensors`` are (M, n, ...) per-module inputs; params with one module are shared by every
    chunk. ``fn`` returns a tensor, a tuple or a dict of tensors with the module axis first.
    """
    num_modules, rows = tensors[0].shape[0], tensors[0].shape[1]
    size = module_chunk_size(num_modules, rows, rows_per_chunk)
    if size >= num_modules or tensors[0].device.type != "cpu":  # GPUs want one big batch
        return fn(params, *tensors)
    results = []
    for start in range(0, num_modules, size):
        part = slice(start, start + size)
        chunk_params = {k: v if v.shape[0] == 1 else v[part] for k, v in params.items()}
        results.append(fn(chunk_params, *(t[part] for t in tensors)))
    return concat_results(results)


def concat_results(results: list):
    """Concatenate a list of tensors / tuples / dicts of tensors along the module axis."""
    first = results[0]
    if isinstance(first, Tensor):
        return torch.cat(results)
    if isinstance(first, dict):
        return {k: concat_results([r[k] for r in results]) for k in first}
    return type(first)(concat_results(list(parts)) for parts in zip(*results, strict=True))


def evaluate(cfg: FieldConfig, params: Params, x: Tensor) -> Tensor:
    """:func:`forward` in cache-sized module chunks (same result, faster for large inputs)."""
    return map_module_chunks(
        lambda p, coords: forward(cfg, p, coords), params, x, rows_per_chunk=cfg.rows_per_chunk
    )


def layer_names(params: Params) -> list[tuple[str, str]]:
    """The (weight, bias) names of every linear layer in forward order: ``[("w0", "b0"), ...]``
    for an MLP; ``density_w0``... then ``colour_w0``... for a grid field (its hash tables are no
    linear layer). The order is the order of a forward ``cache``."""
    if "w0" in params:
        return [(f"w{layer}", f"b{layer}") for layer in range(num_layers(params))]
    names = []
    for network in ("density", "colour"):
        layer = 0
        while f"{network}_w{layer}" in params:
            names.append((f"{network}_w{layer}", f"{network}_b{layer}"))
            layer += 1
    return names
