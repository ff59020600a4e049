"""One-step Jacobians in closed form and the long-range gradient ‖∂s_T/∂s_t‖ for every lag in O(T).

State vectors are flattened: s = h for "simple"/"gru", s = concat(h, c) for "lstm" ([2·hidden]).
Jacobians are in column notation, J[i, j] = ∂s_t,i / ∂s_{t−1},j (the layout of `jax.jacfwd`).
Reference: kexue.fm 2020-11-13; Pascanu, Mikolov & Bengio (ICML 2013), eqs. 3–7.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_grad import cells

# ----------------------------------------------------------------------------- state flattening

def flatten_state(cell: str, state: cells.State) -> jax.Array:
    """State -> vector: h, or concat(h, c) for the LSTM."""
    return jnp.concatenate(state, axis=-1) if cells.check_cell(cell) == "lstm" else state


def unflatten_state(cell: str, s: jax.Array) -> cells.State:
    """Inverse of `flatten_state`."""
    if cells.check_cell(cell) == "lstm":
        d = s.shape[-1] // 2
        return (s[..., :d], s[..., d:])
    return s


def flat_step(cell: str, params: dict, s: jax.Array, x: jax.Array) -> jax.Array:
    """`cells.step` on flattened states: s_{t−1} [D] -> s_t [D]."""
    return flatten_state(cell, cells.step(cell, params, unflatten_state(cell, s), x))


# ----------------------------------------------------------------------------- closed forms

def simple_rnn_jacobian(params: dict, h_prev: jax.Array, x: jax.Array) -> jax.Array:
    """∂h_t/∂h_{t−1} = diag(1 − h_t²) U (post eq. for the simple RNN). Returns [d, d]."""
    h = cells.step("simple", params, h_prev, x)
    return (1.0 - h * h)[:, None] * params["U"].T


def lstm_state_jacobian(params: dict, state: cells.State, x: jax.Array) -> jax.Array:
    """Full state Jacobian ∂(h_t, c_t)/∂(h_{t−1}, c_{t−1}), [2d, 2d] blocks [[hh, hc], [ch, cc]].

    ∂c_t/∂h_{t−1} = diag(c_{t−1} f(1−f)) U_fᵀ + diag(ĉ i(1−i)) U_iᵀ + diag(i(1−ĉ²)) U_ĉᵀ,
    ∂c_t/∂c_{t−1} = diag(f),   ∂h_t/∂· = diag(o(1 − tanh² c_t)) ∂c_t/∂· (+ diag(tanh c_t o(1−o)) U_oᵀ
    for h_{t−1}).
    """
    h_prev, c_prev = state
    i, f, g, o, c = cells.lstm_gates(params, state, x)
    d = h_prev.shape[0]
    ut = params["U"].T  # [4d, d]
    ui, uf, ug, uo = (ut[j * d:(j + 1) * d] for j in range(4))
    dc_dh = ((c_prev * f * (1 - f))[:, None] * uf + (g * i * (1 - i))[:, None] * ui
             + (i * (1 - g * g))[:, None] * ug)
    dc_dc = jnp.diag(f)
    tc = jnp.tanh(c)
    k = o * (1 - tc * tc)
    dh_dh = (tc * o * (1 - o))[:, None] * uo + k[:, None] * dc_dh
    dh_dc = jnp.diag(k * f)
    return jnp.block([[dh_dh, dh_dc], [dc_dh, dc_dc]])


def lstm_cell_jacobian(params: dict, state: cells.State, x: jax.Array, o_prev: jax.Array) -> jax.Array:
    """The post's ∂c_t/∂c_{t−1} with h_{t−1} = o_{t−1} ⊙ tanh(c_{t−1}) (o_{t−1} held fixed), [d, d]:

    f_t + c_{t−1}·∂f_t/∂c_{t−1} + ĉ_t·∂i_t/∂c_{t−1} + i_t·∂ĉ_t/∂c_{t−1}
      = diag(f) + (∂c_t/∂h_{t−1}) diag(o_{t−1}(1 − tanh² c_{t−1})).
    """
    _, c_prev = state
    full = lstm_state_jacobian(params, state, x)
    d = c_prev.shape[0]
    dc_dh, dc_dc = full[d:, :d], full[d:, d:]
    tcp = jnp.tanh(c_prev)
    return dc_dc + dc_dh * (o_prev * (1 - tcp * tcp))[None, :]


def gru_jacobian(params: dict, h_prev: jax.Array, x: jax.Array) -> jax.Array:
    """∂h_t/∂h_{t−1} of the GRU, [d, d]:

    diag(1 − z) + diag((ĥ − h_{t−1}) z(1−z)) U_zᵀ + diag(z(1 − ĥ²)) U_ĥᵀ (diag(r) + diag(h_{t−1} r(1−r)) U_rᵀ).
    """
    d = h_prev.shape[0]
    z, r, hh = cells.gru_gates(params, h_prev, x)
    ut = params["U"].T
    uz, ur, uh = ut[:d], ut[d:2 * d], ut[2 * d:]
    d_rh = jnp.diag(r) + (h_prev * r * (1 - r))[:, None] * ur
    return (jnp.diag(1 - z) + ((hh - h_prev) * z * (1 - z))[:, None] * uz
            + (z * (1 - hh * hh))[:, None] * (uh @ d_rh))


# ----------------------------------------------------------------------------- long range, O(T)

def _views(cell: str, d: int) -> dict:
    """Named sub-blocks (rows, cols) of ∂s_T/∂s_t that are measured."""
    if cell == "lstm":
        return {"state": (slice(None), slice(None)), "h": (slice(0, d), slice(0, d)),
                "cell": (slice(d, 2 * d), slice(d, 2 * d))}
    return {"h": (slice(None), slice(None))}


def long_range_norms(cell: str, params: dict, xs: jax.Array, state0: cells.State | None = None, *,
                     readout: jax.Array | None = None, power_iters: int = 2) -> dict:
    """log ‖∂s_T/∂s_t‖ (spectral and Frobenius) and log ‖∂L/∂x_t‖ for every lag, one reverse scan.

    Carries the block X = (∂s_T/∂s_t) / e^{λ_t} [D, D], back-propagated one step at a time with a
    vmapped VJP (X ← X J_t) and renormalised to ‖X‖_F = 1 each step, the scale kept in log form
    (λ_t += log ‖X J_t‖_F), so float32 never under/overflows. Spectral norms of each view use
    `power_iters` power iterations per step, warm-started from the previous step's right singular
    vector (a lower bound that is tight after a few steps). The loss L = readout · h_T (readout
    defaults to 1/√d) has its cotangent carried the same way, giving log ‖∂L/∂x_t‖.
    Args: xs [T, input_size]; state0 optional. Cost O(T·D³), memory O(T·D) for the trajectory.
    Returns dict of arrays indexed by lag − 1 (lag = T − t = 1..T): "log_frob_<view>",
    "log_spec_<view>" (views: "h" and for the LSTM also "state", "cell"), "log_grad_x"
    (∂L/∂x_{T−lag+1}, so index 0 is x_T), and "hs" [T, d] the hidden trajectory.
    """
    cells.check_cell(cell)
    d = cells.hidden_size(params)
    if state0 is None:
        state0 = cells.initial_state(cell, d, xs.dtype)
    _, states = cells.run(cell, params, xs, state0)
    s_all = flatten_state(cell, states)  # [T, D]
    s0 = flatten_state(cell, state0)
    s_prev = jnp.concatenate([s0[None], s_all[:-1]], axis=0)  # s_{t-1} for t = 1..T
    dim = s_all.shape[1]
    views = _views(cell, d)
    if readout is None:
        readout = jnp.full((d,), 1.0 / jnp.sqrt(d), xs.dtype)
    y0 = jnp.zeros((dim,), xs.dtype).at[:d].set(readout)

    def vjp_rows(s, x, rows):
        _, vjp_fn = jax.vjp(lambda s_, x_: flat_step(cell, params, s_, x_), s, x)
        return jax.vmap(vjp_fn)(rows)

    def body(carry, inp):
        x_block, lam, vs, y, mu = carry
        s, x = inp
        new_x, _ = vjp_rows(s, x, x_block)
        (ys, yx) = vjp_rows(s, x, y[None])
        ys, yx = ys[0], yx[0]
        out = {}
        nf = jnp.linalg.norm(new_x)
        lam_new = lam + jnp.log(nf)
        new_x = new_x / nf
        new_vs = {}
        for name, (r, c) in views.items():
            sub = new_x[r, c]
            v = vs[name]
            for _ in range(power_iters):
                v = sub.T @ (sub @ v)
                v = v / (jnp.linalg.norm(v) + 1e-30)
            new_vs[name] = v
            out[f"log_spec_{name}"] = lam_new + jnp.log(jnp.linalg.norm(sub @ v))
            out[f"log_frob_{name}"] = lam_new + jnp.log(jnp.linalg.norm(sub))
        out["log_grad_x"] = mu + jnp.log(jnp.linalg.norm(yx))
        ny = jnp.linalg.norm(ys)
        return (new_x, lam_new, new_vs, ys / ny, mu + jnp.log(ny)), out

    x0 = jnp.eye(dim, dtype=xs.dtype)
    v0 = {name: jnp.full((dim,), 1.0, xs.dtype)[c] / jnp.sqrt(jnp.asarray(jnp.ones(dim)[c].size, xs.dtype))
          for name, (_, c) in views.items()}
    carry0 = (x0, jnp.zeros((), xs.dtype), v0, y0, jnp.zeros((), xs.dtype))
    _, out = jax.lax.scan(body, carry0, (s_prev[::-1], xs[::-1]))
    out["hs"] = cells.hidden(cell, states)
    return out


def naive_jacobian_norm(cell: str, params: dict, xs: jax.Array, t: int,
                        state0: cells.State | None = None) -> tuple[jax.Array, jax.Array]:
    """Baseline: ∂s_T/∂s_t by `jax.jacrev` of the rest of the sequence; returns (spectral, Frobenius).

    Underflows/overflows for long lags in float32; used for tests and the benchmark.
    """
    d = cells.hidden_size(params)
    if state0 is None:
        state0 = cells.initial_state(cell, d, xs.dtype)
    _, states = cells.run(cell, params, xs[:t], state0) if t > 0 else (state0, None)
    s_t = flatten_state(cell, jax.tree.map(lambda a: a[-1], states)) if t > 0 else flatten_state(cell, state0)

    def rest(s):
        final, _ = cells.run(cell, params, xs[t:], unflatten_state(cell, s))
        return flatten_state(cell, final)

    jac = jax.jacrev(rest)(s_t)
    return jnp.linalg.norm(jac, 2), jnp.linalg.norm(jac)


def input_grad_norms(cell: str, params: dict, xs: jax.Array, readout: jax.Array | None = None) -> jax.Array:
    """‖∂L/∂x_t‖ for t = 1..T from one `jax.grad` of L = readout · h_T (no log-scaling). [T]."""
    d = cells.hidden_size(params)
    if readout is None:
        readout = jnp.full((d,), 1.0 / jnp.sqrt(d), xs.dtype)

    def loss(xs_):
        final, _ = cells.run(cell, params, xs_)
        return readout @ cells.hidden(cell, final)

    return jnp.linalg.norm(jax.grad(loss)(xs), axis=-1)


# ----------------------------------------------------------------------------- rates

def fitted_log_rate(log_norms: jax.Array, min_lag: int = 1) -> jax.Array:
    """Least-squares slope of log‖·‖ against lag over lags ≥ min_lag (per-step log-rate).

    log_norms [..., T] indexed by lag − 1; returns [...]. Averages over leading axes first.
    """
    y = log_norms.reshape(-1, log_norms.shape[-1]).mean(axis=0)[min_lag - 1:]
    lag = jnp.arange(min_lag, min_lag + y.shape[0], dtype=y.dtype)
    lc = lag - lag.mean()
    return jnp.sum(lc * (y - y.mean())) / jnp.sum(lc * lc)


def predicted_log_rate_simple(gain: float, hs: jax.Array) -> jax.Array:
    """Mean-field rate for U = g·Q: log g + ½ · mean_t log(mean_i (1 − h_{t,i}²)²). hs [..., T, d]."""
    a = (1.0 - hs * hs) ** 2
    return jnp.log(gain) + 0.5 * jnp.mean(jnp.log(jnp.mean(a, axis=-1)))


def predicted_log_rate_diag(gate: jax.Array) -> jax.Array:
    """Forget-gate-only rate ½ · mean_t log(mean_i a_{t,i}²) for the diagonal path a = f (LSTM) or 1 − z (GRU).

    gate [..., T, d]; returns a scalar (averaged over the leading axes too).
    """
    return 0.5 * jnp.mean(jnp.log(jnp.mean(gate * gate, axis=-1)))


def gated_path_coefficients(cell: str, params: dict, xs: jax.Array, state0: cells.State | None = None) -> dict:
    """The per-unit coefficients of every term of the gated cells' one-step Jacobian, along a trajectory.

    LSTM, the post's ∂c_t/∂c_{t−1} with h_{t−1} = o_{t−1} ⊙ tanh c_{t−1} (`lstm_cell_jacobian`), plus
    the output-gate path of ∂h_t/∂h_{t−1} (`lstm_state_jacobian`):
      diag(f_t) + [diag(c_{t−1} f(1−f)) U_fᵀ + diag(ĉ i(1−i)) U_iᵀ + diag(i(1−ĉ²)) U_ĉᵀ] diag(κ_{t−1}),
      κ_{t−1} = o_{t−1}(1 − tanh² c_{t−1}) (κ_0 = 0: h_0 is given), and diag(tanh c_t · o(1−o)) U_oᵀ.
    GRU, ∂h_t/∂h_{t−1} (`gru_jacobian`):
      diag(1 − z) + diag((ĥ − h_{t−1}) z(1−z)) U_zᵀ + diag(z(1−ĥ²)) U_ĥᵀ [diag(r) + diag(h_{t−1} r(1−r)) U_rᵀ].
    Keys ([T, d] each): "keep" (f or 1 − z), "candidate_out" and "candidate_in" (the diagonals left and
    right of U_ĉᵀ / U_ĥᵀ: i(1−ĉ²), κ_{t−1} / z(1−ĥ²), r), and the terms odd in a state whose
    pre-activation is symmetric about 0: LSTM "forget_input" c_{t−1}f(1−f), "input_input" ĉ i(1−i),
    "output" tanh c_t · o(1−o); GRU "update_input" (ĥ − h_{t−1}) z(1−z), "reset_input" h_{t−1} r(1−r).
    xs [T, input_size].
    """
    cells.check_cell(cell)
    if cell == "simple":
        raise ValueError("cell: gated_path_coefficients needs 'lstm' or 'gru', got 'simple'")
    d = cells.hidden_size(params)
    if state0 is None:
        state0 = cells.initial_state(cell, d, xs.dtype)
    _, states = cells.run(cell, params, xs, state0)
    prev = jax.tree.map(lambda a0, a: jnp.concatenate([a0[None], a[:-1]]), state0, states)  # state_{t−1}
    if cell == "lstm":
        i, f, g, o, c = jax.vmap(lambda h, c_, x: cells.lstm_gates(params, (h, c_), x))(prev[0], prev[1], xs)
        kappa = o * (1 - jnp.tanh(c) ** 2)  # ∂h_t/∂c_t at t; shifted to t − 1 below
        kappa_prev = jnp.concatenate([jnp.zeros_like(kappa[:1]), kappa[:-1]])
        return {"keep": f, "candidate_out": i * (1 - g * g), "candidate_in": kappa_prev,
                "forget_input": prev[1] * f * (1 - f), "input_input": g * i * (1 - i),
                "output": jnp.tanh(c) * o * (1 - o)}
    z, r, hh = jax.vmap(lambda h, x: cells.gru_gates(params, h, x))(prev, xs)
    return {"keep": 1 - z, "candidate_out": z * (1 - hh * hh), "candidate_in": r,
            "update_input": (hh - prev) * z * (1 - z), "reset_input": prev * r * (1 - r)}


ODD_TERMS = {"lstm": ("forget_input", "input_input"), "gru": ("update_input", "reset_input")}


def gated_jacobians_from_coefficients(cell: str, params: dict, coefficients: dict, drop=()) -> jax.Array:
    """The one-step Jacobians rebuilt from `gated_path_coefficients`, with the named terms left out.

    LSTM: the post's ∂c_t/∂c_{t−1} (`lstm_cell_jacobian`, o_{t−1} held fixed: no output-gate path);
    GRU: ∂h_t/∂h_{t−1} (`gru_jacobian`). drop ⊆ {"candidate"} ∪ ODD_TERMS[cell] zeroes those
    coefficients (the ablations of the report). coefficients: [T, d] each; returns [T, d, d].
    """
    unknown = set(drop) - {"candidate", *ODD_TERMS[cells.check_cell(cell)]}
    if unknown:
        raise ValueError(f"drop: unknown terms {sorted(unknown)} for cell {cell!r}")
    co = {k: (jnp.zeros_like(v) if k in drop or (k == "candidate_out" and "candidate" in drop) else v)
          for k, v in coefficients.items()}
    d = cells.hidden_size(params)
    ut = params["U"].T
    blocks = [ut[j * d:(j + 1) * d] for j in range(cells.NUM_BLOCKS[cell])]

    def one(c):
        if cell == "lstm":
            u_i, u_f, u_g, _ = blocks
            mix = c["forget_input"][:, None] * u_f + c["input_input"][:, None] * u_i + c["candidate_out"][:, None] * u_g
            return jnp.diag(c["keep"]) + mix * c["candidate_in"][None, :]
        u_z, u_r, u_h = blocks
        inner = jnp.diag(c["candidate_in"]) + c["reset_input"][:, None] * u_r
        return jnp.diag(c["keep"]) + c["update_input"][:, None] * u_z + c["candidate_out"][:, None] * (u_h @ inner)

    return jax.vmap(one)(co)


def product_log_rate(jacobians: jax.Array, min_lag: int = 1, view=(slice(None), slice(None))) -> jax.Array:
    """Fitted per-step log-rate of ‖(J_T ⋯ J_{T−lag+1})[view]‖_F over lags ≥ min_lag.

    jacobians [T, D, D] -> scalar; view: (rows, cols) of the product, e.g. the LSTM's cell block.
    The product is renormalised every step with the scale kept as a log (no float32 underflow).
    """
    def body(carry, jac):
        x, lam = carry
        x = x @ jac
        n = jnp.linalg.norm(x)
        x = x / n
        return (x, lam + jnp.log(n)), lam + jnp.log(n) + jnp.log(jnp.linalg.norm(x[view]))

    _, logs = jax.lax.scan(body, (jnp.eye(jacobians.shape[-1], dtype=jacobians.dtype),
                                  jnp.zeros((), jacobians.dtype)), jacobians[::-1])
    return fitted_log_rate(logs, min_lag)


def predicted_log_rate_gated(coefficients: dict, gain: float) -> jax.Array:
    """Mean-field rate of the gated cells, forget gate and candidate path together:

      λ = mean_t log(⟨keep_t⟩ + g · ⟨candidate_out_t⟩ · ⟨candidate_in_t⟩),   ⟨·⟩ = mean over units,
    i.e. LSTM: log(⟨f_t⟩ + g⟨i_t(1−ĉ_t²)⟩⟨o_{t−1}(1−tanh² c_{t−1})⟩); GRU: log(⟨1−z_t⟩ + g⟨z_t(1−ĥ_t²)⟩⟨r_t⟩).

    Derivation (the post's mean-field step, one term at a time; coefficients from `gated_path_coefficients`):
    1. Mean field: every diagonal factor diag(a_t) is replaced by ⟨a_t⟩·I. The remainder
       diag(a_t − ⟨a_t⟩) scatters a vector into directions uncorrelated with it, which step 3 lets decay.
    2. Symmetry: the pre-activations of ĉ (ĥ) and hence c and h are symmetric about 0, so the
       coefficients odd in them average to 0: ⟨c_{t−1}f(1−f)⟩, ⟨ĉ i(1−i)⟩, ⟨tanh c · o(1−o)⟩ for the LSTM,
       ⟨(ĥ − h)z(1−z)⟩, ⟨h r(1−r)⟩ for the GRU. The one-step Jacobian becomes ⟨keep_t⟩ I + β_t Uᵀ with
       β_t = ⟨candidate_out_t⟩⟨candidate_in_t⟩ > 0 and U = U_ĉ (U_ĥ) = g·Q, Q orthogonal.
    3. These matrices commute for all t. On an eigenvector of Q with eigenvalue e^{iθ} the product grows
       as Π_t |⟨keep_t⟩ + g β_t e^{iθ}|; all coefficients are positive, so θ → 0 is the fastest, and a
       Haar-random Q has eigen-angles dense around 0: the two terms add in amplitude, not in power.
    Unlike the simple RNN (`predicted_log_rate_simple`, where every direction is amplified alike and
    the root-mean-square of diag(1 − h²) is right) the unit-to-unit fluctuation is dropped here.

    coefficients: dict of [..., T, d] arrays; gain g: the recurrent blocks' scale (spectral radius).
    Returns a scalar (averaged over the leading axes).
    """
    mean = lambda k: jnp.mean(coefficients[k], axis=-1)  # noqa: E731  [..., T]
    return jnp.mean(jnp.log(mean("keep") + gain * mean("candidate_out") * mean("candidate_in")))
