"""Simple tanh RNN, LSTM and GRU cells as pure functions over a params dict, run with `lax.scan`.

Conventions (one example, no batch axis; `jax.vmap` for batches): `x` [input_size], hidden `h`
[hidden_size]; the state is `h` for "simple" and "gru" and the pair `(h, c)` for "lstm".
Pre-activations are `x @ W + h @ U + b`, i.e. in column notation `W^T x + U^T h + b`.

- simple: h_t = tanh(W x_t + U h_{t-1} + b)                                  (Pascanu et al. 2013, eq. 1)
- lstm:   [i, f, ĉ, o] = [σ, σ, tanh, σ](W x_t + U h_{t-1} + b), c_t = f ⊙ c_{t-1} + i ⊙ ĉ,
          h_t = o ⊙ tanh(c_t); the forget-gate bias starts at `forget_bias` (Gers et al. 2000).
- gru:    z, r = σ(...), ĥ = tanh(W_h x_t + U_h (r ⊙ h_{t-1}) + b_h), h_t = (1 − z) ⊙ h_{t-1} + z ⊙ ĥ.
Reference: kexue.fm 2020-11-13 ("也来谈谈RNN的梯度消失/爆炸问题").
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

State = Any  # a cell state: h [hidden] ("simple", "gru") or the pair (h, c) ("lstm"); batched: leading axes
Gates = tuple[jax.Array, ...]

CELLS = ("simple", "lstm", "gru")
NUM_BLOCKS = {"simple": 1, "lstm": 4, "gru": 3}


def check_cell(cell: str) -> str:
    """Returns `cell` or raises ValueError naming the argument."""
    if cell not in CELLS:
        raise ValueError(f"cell: unknown cell name {cell!r}; expected one of {CELLS}")
    return cell


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def orthogonal(key: jax.Array, n: int) -> jax.Array:
    """A Haar-random orthogonal n×n matrix (QR of a Gaussian with the sign of diag(R) fixed)."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (n, n)))
    return q * jnp.sign(jnp.diag(r))[None, :]


def init(cell: str, key: jax.Array, input_size: int, hidden_size: int, *, gain: float = 1.0,
         orthogonal_init: bool = True, forget_bias: float = 1.0) -> dict:
    """Initial parameters of `cell`.

    W ~ N(0, 1/input_size) [input_size, k·hidden]; each of the k recurrent blocks of U
    [hidden, k·hidden] is `gain · Q` (Q Haar orthogonal) or, with `orthogonal_init=False`,
    N(0, gain²/hidden) (spectral radius ≈ gain); b = 0 except the LSTM forget block = `forget_bias` and the
    GRU update block = −`forget_bias`
    (so the keep gate 1 − z starts near σ(forget_bias)).
    Gate order: lstm [i, f, ĉ, o], gru [z, r, ĥ].
    """
    check_cell(cell)
    _check_positive("input_size", input_size)
    _check_positive("hidden_size", hidden_size)
    k = NUM_BLOCKS[cell]
    kw, ku = jax.random.split(key)
    w = jax.random.normal(kw, (input_size, k * hidden_size)) / jnp.sqrt(input_size)
    ukeys = jax.random.split(ku, k)
    if orthogonal_init:
        blocks = [gain * orthogonal(kk, hidden_size) for kk in ukeys]
    else:
        blocks = [gain * jax.random.normal(kk, (hidden_size, hidden_size)) / jnp.sqrt(hidden_size)
                  for kk in ukeys]
    u = jnp.concatenate(blocks, axis=1)
    b = jnp.zeros((k * hidden_size,))
    if cell == "lstm":
        b = b.at[hidden_size:2 * hidden_size].set(forget_bias)
    if cell == "gru":  # keep-gate 1 − z plays the forget gate: z bias = −forget_bias
        b = b.at[:hidden_size].set(-forget_bias)
    return {"W": w, "U": u, "b": b}


def hidden_size(params: dict) -> int:
    return params["U"].shape[0]


def initial_state(cell: str, hidden: int, dtype: DTypeLike = jnp.float32) -> State:
    """Zero state: `h` [hidden] or `(h, c)` for the LSTM."""
    check_cell(cell)
    _check_positive("hidden_size", hidden)
    h = jnp.zeros((hidden,), dtype)
    return (h, h) if cell == "lstm" else h


def lstm_gates(params: dict, state: State, x: jax.Array) -> Gates:
    """(i, f, ĉ, o, c_t) of one LSTM step from state (h, c)_{t-1} and x_t (vectors)."""
    h, c = state
    d = params["U"].shape[0]
    a = x @ params["W"] + h @ params["U"] + params["b"]
    i, f, o = (jax.nn.sigmoid(a[j * d:(j + 1) * d]) for j in (0, 1, 3))
    g = jnp.tanh(a[2 * d:3 * d])
    return i, f, g, o, f * c + i * g


def gru_gates(params: dict, h: jax.Array, x: jax.Array) -> Gates:
    """(z, r, ĥ) of one GRU step from h_{t-1} and x_t (vectors)."""
    u = params["U"]
    d = u.shape[0]
    ax = x @ params["W"] + params["b"]
    ah = h @ u[:, :2 * d]
    z = jax.nn.sigmoid(ax[:d] + ah[:d])
    r = jax.nn.sigmoid(ax[d:2 * d] + ah[d:])
    hh = jnp.tanh(ax[2 * d:] + (r * h) @ u[:, 2 * d:])
    return z, r, hh


def step(cell: str, params: dict, state: State, x: jax.Array) -> State:
    """One step: (state_{t-1}, x_t) -> state_t. Shapes as in the module docstring."""
    check_cell(cell)
    if cell == "simple":
        return jnp.tanh(x @ params["W"] + state @ params["U"] + params["b"])
    if cell == "lstm":
        _, _, _, o, c_new = lstm_gates(params, state, x)
        return (o * jnp.tanh(c_new), c_new)
    z, _, hh = gru_gates(params, state, x)
    return (1.0 - z) * state + z * hh


def hidden(cell: str, state: State) -> jax.Array:
    """The output h of a state."""
    return state[0] if check_cell(cell) == "lstm" else state


def run(cell: str, params: dict, xs: jax.Array, state0: State | None = None) -> tuple[State, State]:
    """Runs the cell over xs [T, input_size] with `lax.scan`.

    Returns (final_state, states) where `states` stacks state_1..state_T on a leading T axis
    (for the LSTM a pair of [T, hidden] arrays).
    """
    check_cell(cell)
    if xs.ndim != 2 or xs.shape[0] <= 0:
        raise ValueError(f"xs must have shape [T, input_size] with T > 0, got {xs.shape}")
    if state0 is None:
        state0 = initial_state(cell, hidden_size(params), xs.dtype)

    def body(state, x):
        new = step(cell, params, state, x)
        return new, new

    return jax.lax.scan(body, state0, xs)
