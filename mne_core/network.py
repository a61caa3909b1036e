"""Energy networks (Flax NNX) and their flat-parameter view.

The model energy is

    U_θ(x) = ½ β |x|² + NN_θ(x),

an MLP ``NN_θ: R^d → R`` with a smooth activation plus a fixed quadratic confinement
(β = 1 by default, the stationary OU energy).  With the activations offered (``silu``,
``gelu``, ``softplus`` grow at most linearly; ``tanh``, ``sin`` are bounded) the network part
grows at most linearly in |x|, so the quadratic dominates and ``e^{-U_θ}`` is integrable for
every θ — the model density of the sampler is always well defined.

The solvers work on a flat parameter vector θ ∈ R^p.  :class:`FlatEnergy` holds the NNX
graph definition and the unravel function, and exposes ``energy(theta, x)`` as a pure
function of (θ, x) that JAX transformations can differentiate in either argument.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

from .config import MIXTURE_COMPONENTS

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "sin": jnp.sin,
}


class EnergyMLP(nnx.Module):
    """MLP ``NN_θ(x)`` with ``depth`` hidden layers of ``width`` units and a scalar output.

    Call returns the full energy ``U_θ(x) = ½ β |x|² + NN_θ(x)`` for ``x`` of shape (..., d).
    """

    def __init__(self, dim: int, width: int = 64, depth: int = 2, activation: str = "tanh",
                 quadratic: float = 1.0, *, rngs: nnx.Rngs):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if depth < 1 or width < 1:
            raise ValueError("depth and width must be at least 1")
        self.dim = dim
        self.activation = activation
        self.quadratic = quadratic
        sizes = [dim] + [width] * depth
        self.hidden = nnx.List([
            nnx.Linear(a, b, kernel_init=nnx.initializers.lecun_normal(), rngs=rngs)
            for a, b in zip(sizes[:-1], sizes[1:])
        ])
        self.out = nnx.Linear(width, 1, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        h = x
        for layer in self.hidden:
            h = act(layer(h))
        return 0.5 * self.quadratic * jnp.sum(x * x, axis=-1) + self.out(h)[..., 0]


class BlockLinear(nnx.Module):
    """B stacked affine maps R^a → R^b (one per block): kernel (B, a, b), bias (B, b)."""

    def __init__(self, blocks: int, a: int, b: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal(in_axis=1, out_axis=2, batch_axis=(0,))
        self.kernel = nnx.Param(init(rngs.params(), (blocks, a, b)))
        self.bias = nnx.Param(jnp.zeros((blocks, b)))


class BlockOut(nnx.Module):
    """The output layer of a block network: kernel (B, width, 1), one shared scalar bias (1,)."""

    def __init__(self, blocks: int, width: int):
        self.kernel = nnx.Param(jnp.zeros((blocks, width, 1)))
        self.bias = nnx.Param(jnp.zeros((1,)))


class BlockEnergyMLP(nnx.Module):
    """Block-sum energy ``U_θ(x) = ½ β |x|² + Σ_b NN_b(x_b)``: one MLP per block of coordinates
    (``blocks``, a partition of range(d); :mod:`mne_core.structure` says why), evaluated together
    as stacked layers on the gathered, zero-padded block inputs.  Same depth, activation and
    confinement as :class:`EnergyMLP`; ``width`` is each block's hidden width."""

    def __init__(self, dim: int, blocks, width: int = 32, depth: int = 2, activation: str = "silu",
                 quadratic: float = 1.0, *, rngs: nnx.Rngs):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if depth < 1 or width < 1:
            raise ValueError("depth and width must be at least 1")
        blocks = tuple(tuple(int(i) for i in b) for b in blocks)
        if sorted(i for b in blocks for i in b) != list(range(dim)):
            raise ValueError(f"blocks must partition range({dim}), got {blocks}")
        self.dim = dim
        self.activation = activation
        self.quadratic = quadratic
        s = max(len(b) for b in blocks)
        self.index = nnx.static(tuple(b + (0,) * (s - len(b)) for b in blocks))
        self.valid = nnx.static(tuple((1.0,) * len(b) + (0.0,) * (s - len(b)) for b in blocks))
        sizes = [s] + [width] * depth
        self.hidden = nnx.List([BlockLinear(len(blocks), a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = BlockOut(len(blocks), width)

    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        lead = x.shape[:-1]
        xm = x.reshape(-1, x.shape[-1])
        # (B, M, s): the block axis leads, so every layer is one batched matmul over the blocks
        h = jnp.swapaxes(xm[:, np.asarray(self.index)] * jnp.asarray(self.valid, x.dtype), 0, 1)
        for layer in self.hidden:
            h = act(jnp.matmul(h, layer.kernel[...]) + layer.bias[...][:, None, :])
        nn = jnp.einsum("bmj,bj->m", h, self.out.kernel[...][..., 0]) + self.out.bias[...][0]
        return 0.5 * self.quadratic * jnp.sum(x * x, axis=-1) + nn.reshape(lead)


def _rotation_arguments(dim: int, rest, group, width: int, depth: int, activation: str) -> tuple[tuple, tuple]:
    """(rest, group) as tuples of ints, checked for a rotation-aware network: a known activation,
    width and depth ≥ 1, and rest (≥ 1) and group (≥ 2 coordinates) partitioning range(dim)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    if depth < 1 or width < 1:
        raise ValueError("depth and width must be at least 1")
    rest, group = tuple(int(i) for i in rest), tuple(int(i) for i in group)
    if not rest or len(group) < 2 or sorted(rest + group) != list(range(dim)):
        raise ValueError(f"rest {rest} and group {group} (≥ 2 coordinates) must partition range({dim})")
    return rest, group


class RadialEnergyMLP(nnx.Module):
    """Energy of a target invariant under rotations of a coordinate group G (:mod:`mne_core.structure`):
    with R = the other coordinates and s = |x_G|²,

        U_θ(x) = ½ β Σ_{r∈R} e^{q_r} x_r² + NN_a(x_R, √(1+s) − 1, log(1+s)) + ½ β s · exp(c·x_R + NN_b(x_R)),

    two MLPs (``depth`` × ``width``, last layers zero) and a learned diagonal confinement q (zero at
    the start, so U_θ = ½ β |x|² at θ_init).  NN_a grows at most linearly in |x_R| and in √s while
    the two quadratics have positive coefficients, so e^{−U_θ} is integrable for every θ.  The
    group's scale exp(c·x_R + NN_b) is what a plain MLP lacks on Neal's funnel, whose U_0 =
    x0²/18 + ½ s e^{−x0} + … is in this family (``benchmarks/funnel_fit.py --radial``: the exact
    U_t held to 0.06–0.2 at t = 0…1, where U = ½|x|² + MLP is off by 5.6·10³ at t = 0)."""

    def __init__(self, dim: int, rest, group, width: int = 128, depth: int = 2, activation: str = "silu",
                 quadratic: float = 1.0, *, rngs: nnx.Rngs):
        rest, group = _rotation_arguments(dim, rest, group, width, depth, activation)
        self.dim = dim
        self.activation = activation
        self.quadratic = quadratic
        self.rest, self.group = nnx.static(rest), nnx.static(group)
        zeros = nnx.initializers.zeros_init()
        sa, sb = [len(rest) + 2] + [width] * depth, [len(rest)] + [width] * depth
        self.hidden = nnx.List([nnx.Linear(a, b, kernel_init=nnx.initializers.lecun_normal(), rngs=rngs)
                                for a, b in zip(sa[:-1], sa[1:])])
        self.out = nnx.Linear(width, 1, kernel_init=zeros, rngs=rngs)
        self.scale_hidden = nnx.List([nnx.Linear(a, b, kernel_init=nnx.initializers.lecun_normal(), rngs=rngs)
                                      for a, b in zip(sb[:-1], sb[1:])])
        self.scale_out = nnx.Linear(width, 1, kernel_init=zeros, rngs=rngs)
        self.scale_linear = nnx.Linear(len(rest), 1, use_bias=False, kernel_init=zeros, rngs=rngs)
        self.log_confinement = nnx.Param(jnp.zeros((len(rest),)))

    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        xr = x[..., np.asarray(self.rest)]
        s = jnp.sum(x[..., np.asarray(self.group)] ** 2, axis=-1)
        h = jnp.concatenate([xr, (jnp.sqrt(1.0 + s) - 1.0)[..., None], jnp.log1p(s)[..., None]], axis=-1)
        for layer in self.hidden:
            h = act(layer(h))
        g = xr
        for layer in self.scale_hidden:
            g = act(layer(g))
        log_scale = self.scale_out(g)[..., 0] + self.scale_linear(xr)[..., 0]
        confine = jnp.sum(jnp.exp(self.log_confinement[...]) * xr * xr, axis=-1)
        return 0.5 * self.quadratic * (confine + s * jnp.exp(log_scale)) + self.out(h)[..., 0]


class ScaleMixtureEnergy(nnx.Module):
    """Energy of a target invariant under rotations of a coordinate group G (k = |G| coordinates),
    written as a Gaussian scale mixture of x_G given the other coordinates x_R (s = |x_G|²):

        U_θ(x) = ½ β Σ_{r∈R} e^{q_r} x_r² + NN_v(x_R)
                 − log Σ_{j=1..J} π_j(x_R) exp(−½ s e^{−g_j(x_R)} − (k/2) g_j(x_R)),

    π = softmax(NN_π(x_R) + b_π), g_j = b_j + c_j·x_R + NN_g(x_R)_j (one trunk MLP of ``depth`` ×
    ``width`` with zero-initialised heads).  Given x_R the x_G-part integrates to (2π)^{k/2} for every
    θ, so e^{−U_θ} is integrable (NN_v grows at most linearly, β > 0), and U_θ is non-decreasing in s:
    the model cannot put spurious mass at large |x_G| beyond its components' weights.  The family is the
    form of the exact U_t on a hierarchical target such as Neal's funnel: there x_G | x_0 is Gaussian
    at t = 0 (J = 1, g = x_0) and the OU process keeps it a scale mixture,
    ρ_t(x_G | x_0) = ∫ p_t(u | x_0) N(x_G; 0, (e^{−2t} e^u + 1 − e^{−2t}) I) du.
    The component log-variances start spread over ±``spread`` (symmetry breaking)."""

    def __init__(self, dim: int, rest, group, width: int = 64, depth: int = 2, activation: str = "silu",
                 quadratic: float = 1.0, components: int = MIXTURE_COMPONENTS, spread: float = 0.5, *,
                 rngs: nnx.Rngs):
        rest, group = _rotation_arguments(dim, rest, group, width, depth, activation)
        if components < 1:
            raise ValueError("components must be at least 1")
        self.dim = dim
        self.activation = activation
        self.quadratic = quadratic
        self.rest, self.group = nnx.static(rest), nnx.static(group)
        zeros = nnx.initializers.zeros_init()
        sizes = [len(rest)] + [width] * depth
        self.hidden = nnx.List([nnx.Linear(a, b, kernel_init=nnx.initializers.lecun_normal(), rngs=rngs)
                                for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nnx.Linear(width, 1, kernel_init=zeros, rngs=rngs)
        self.log_variance_head = nnx.Linear(width, components, kernel_init=zeros, rngs=rngs)
        self.log_variance_linear = nnx.Linear(len(rest), components, use_bias=False, kernel_init=zeros, rngs=rngs)
        self.log_variance_bias = nnx.Param(jnp.linspace(-spread, spread, components) if components > 1
                                           else jnp.zeros((1,)))
        self.logit_head = nnx.Linear(width, components, kernel_init=zeros, rngs=rngs)
        self.log_confinement = nnx.Param(jnp.zeros((len(rest),)))

    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        xr = x[..., np.asarray(self.rest)]
        k = len(self.group)
        s = jnp.sum(x[..., np.asarray(self.group)] ** 2, axis=-1)
        h = xr
        for layer in self.hidden:
            h = act(layer(h))
        g = self.log_variance_bias[...] + self.log_variance_linear(xr) + self.log_variance_head(h)
        log_pi = jax.nn.log_softmax(self.logit_head(h), axis=-1)
        comp = log_pi - 0.5 * s[..., None] * jnp.exp(-g) - 0.5 * k * g
        confine = jnp.sum(jnp.exp(self.log_confinement[...]) * xr * xr, axis=-1)
        return 0.5 * self.quadratic * confine + self.out(h)[..., 0] - jax.scipy.special.logsumexp(comp, axis=-1)


@dataclasses.dataclass(frozen=True)
class FlatEnergy:
    """Pure functional view of an :class:`EnergyMLP` over a flat parameter vector θ ∈ R^p.

    ``energy(theta, x)`` evaluates U_θ at a single point x ∈ R^d (vmap for batches);
    ``layer_weights(theta)`` returns the weight matrices per layer for histograms.
    The object is hashable by identity, so it can be a static argument of ``jax.jit``.
    """

    graphdef: object
    unravel: Callable
    dim: int
    num_params: int
    layer_names: tuple
    blocks: tuple | None = None    # the coordinate blocks of a BlockEnergyMLP (None: EnergyMLP)
    radial: tuple | None = None    # (rest, group) of a rotation-aware network (None: not one)
    mixture: bool = False          # that network is the ScaleMixtureEnergy (else RadialEnergyMLP)

    __hash__ = object.__hash__
    __eq__ = object.__eq__

    @property
    def colours(self) -> tuple | None:
        """For a block network, a colouring of the coordinates for the Laplacian: colour k holds the
        k-th coordinate of every block, so no two coordinates of one colour share a block and the
        Hessian has no entry between them (``operators.local_derivatives``).  None for the MLP."""
        if self.blocks is None:
            return None
        return tuple(tuple(b[k] for b in self.blocks if len(b) > k) for k in range(max(map(len, self.blocks))))

    def model(self, theta) -> EnergyMLP:
        return nnx.merge(self.graphdef, self.unravel(theta))

    def energy(self, theta, x):
        """U_θ(x) for one point x of shape (d,) (a scalar)."""
        return self.model(theta)(x)

    def energies(self, theta, xs):
        """U_θ(x_i) for a batch xs of shape (M, d)."""
        return self.model(theta)(xs)

    def shift_constant(self, theta, c):
        """θ with the output bias increased by c, i.e. U_θ' = U_θ + c (no other change)."""
        params = self.unravel(theta)
        params["out"]["bias"][...] = params["out"]["bias"][...] + c
        return ravel_pytree(params)[0]

    def layer_weights(self, theta) -> dict[str, np.ndarray]:
        """Per-layer kernels (weight matrices) as numpy arrays, for weight histograms."""
        params = self.unravel(jnp.asarray(theta))
        kernels = [params["hidden"][i]["kernel"] for i in range(len(self.layer_names) - 1)]
        kernels.append(params["out"]["kernel"])
        return {name: np.asarray(k[...]) for name, k in zip(self.layer_names, kernels)}


def init_energy_network(dim: int, width: int = 64, depth: int = 2, activation: str = "tanh",
                        quadratic: float = 1.0, seed: int = 0,
                        dtype=None, blocks=None, radial=None, mixture: bool = False) -> tuple[FlatEnergy, jax.Array]:
    """Build an :class:`EnergyMLP` (or, given ``blocks``, a :class:`BlockEnergyMLP` with
    ``width`` per block; given ``radial = (rest, group)``, a :class:`RadialEnergyMLP`, or with ``mixture``
    a :class:`ScaleMixtureEnergy`), split it with ``nnx.split(model, nnx.Param)``, and return its flat
    view and the initial θ ∈ R^p (in ``dtype``, default: JAX's default float).

    The output layer starts at zero, so U_θ(x) = ½ β |x|² (the OU equilibrium) at θ_init.
    """
    if radial is not None:
        radial = tuple(tuple(int(i) for i in part) for part in radial)
        cls = ScaleMixtureEnergy if mixture else RadialEnergyMLP
        model = cls(dim, *radial, width, depth, activation, quadratic, rngs=nnx.Rngs(seed))
    elif blocks is not None:
        blocks = tuple(tuple(int(i) for i in b) for b in blocks)
        model = BlockEnergyMLP(dim, blocks, width, depth, activation, quadratic, rngs=nnx.Rngs(seed))
    else:
        model = EnergyMLP(dim, width, depth, activation, quadratic, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)
    dtype = dtype or jnp.zeros(()).dtype
    params = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), params)
    theta, unravel = ravel_pytree(params)
    names = tuple(f"hidden{i}" for i in range(depth)) + ("out",)
    return FlatEnergy(graphdef, unravel, dim, int(theta.size), names, blocks, radial,
                      bool(mixture) and radial is not None), theta
