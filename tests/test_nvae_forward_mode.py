"""Forward-mode autodiff through NVAE on CPU (issue 24): the depthwise conv's custom JVP against XLA's
grouped convolution, Hessian-vector products against central finite differences, and
`shared.transforms.gradient_norm_penalty` (forward-over-reverse) on the NVAE loss."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from nvae_jax import configs
from nvae_jax.model import NVAE, DecCell, PairedFlow
from nvae_jax.train import nvae_loss
from shared import workarounds
from shared.transforms import gradient_norm_penalty

# one xdist worker runs this module, so its costly module-scoped fixtures are built once (`--dist loadgroup`)
pytestmark = pytest.mark.xdist_group("test_nvae_forward_mode")

# no spectral / BN penalty and β = 1 (KL balancing off): what is left has no stop_gradient, so the
# autodiff Hessian is the Hessian of the function that finite differences see
HVP_CFG = dataclasses.replace(configs.DIGITS, num_nf=1, weight_decay_norm=0.0)
O0 = {"xla_backend_optimization_level": 0}  # compiles second-order programs faster (RESULTS.md)


def grouped_conv(x, kernel):
    k = kernel.shape[0]
    lo = (k - 1) // 2
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), [(lo, k - 1 - lo)] * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])


def _normal(seed, shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.PRNGKey(seed), shape, dtype)


@jax.jit
def _forward_mode_against_grouped_conv(x, kernel, dx, dk, ct):
    """Pairs (ours, grouped conv): ẏ for (ẋ, k̇), (ẋ, 0), (0, k̇); linearize; the transposed linear map."""
    pairs = []
    for tangents in [(dx, dk), (dx, jnp.zeros_like(dk)), (jnp.zeros_like(dx), dk)]:  # each term of ẏ alone too
        pairs.append((jax.jvp(workarounds.depthwise_conv, (x, kernel), tangents),
                      jax.jvp(grouped_conv, (x, kernel), tangents)))
    _, lin = jax.linearize(workarounds.depthwise_conv, x, kernel)
    pairs.append((lin(dx, dk), pairs[0][1][1]))
    # JAX's transpose of the tangent rule is the reverse mode: it must be the grouped conv's VJP
    pairs.append((jax.linear_transpose(lin, x, kernel)(ct), jax.vjp(grouped_conv, x, kernel)[1](ct)))
    return pairs


@pytest.mark.parametrize("k", [3, 4, 5])
def test_depthwise_jvp_linearize_and_transpose_match_grouped_convolution(k):
    x, kernel = _normal(0, (2, 7, 6, 3)), _normal(1, (k, k, 1, 3))
    dx, dk, ct = _normal(2, x.shape), _normal(3, kernel.shape), _normal(4, x.shape)
    for ours, ref in _forward_mode_against_grouped_conv(x, kernel, dx, dk, ct):
        for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_depthwise_hessian_matches_grouped_convolution_in_float64():
    with jax.enable_x64(True):
        x, kernel = _normal(0, (1, 4, 5, 2), jnp.float64), _normal(1, (3, 3, 1, 2), jnp.float64)
        w = _normal(2, x.shape, jnp.float64)

        def objective(conv):
            return lambda x, kernel: jnp.sum(jnp.tanh(conv(x, kernel)) * w)

        hess = jax.jit(jax.hessian(objective(workarounds.depthwise_conv), argnums=(0, 1)))(x, kernel)  # fwd-over-rev
        hess_ref = jax.jit(jax.hessian(objective(grouped_conv), argnums=(0, 1)))(x, kernel)
        for got, want in zip(jax.tree.leaves(hess), jax.tree.leaves(hess_ref)):
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def _conv_in_a_loop_body(x, kernel):
    with workarounds.loop_body():  # as `shared.layer_scan.scan_stacked` traces its body
        return workarounds.conv2d(x, kernel)


def _lax_conv(x, kernel):
    p = (kernel.shape[0] - 1) // 2
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), [(p, p)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_loop_body_conv_value_jvp_and_gradient_match_the_lax_convolution(k):
    """`conv2d` inside a loop body on CPU takes its derivatives from dots; they are the convolution's."""
    x, kernel = _normal(0, (2, 7, 6, 3)), _normal(1, (k, k, 3, 4))
    dx, dk, ct = _normal(2, x.shape), _normal(3, kernel.shape), _normal(4, (2, 7, 6, 4))

    @jax.jit
    def pairs():
        out = [(_conv_in_a_loop_body(x, kernel), _lax_conv(x, kernel))]
        out += [(jax.jvp(_conv_in_a_loop_body, (x, kernel), t), jax.jvp(_lax_conv, (x, kernel), t))
                for t in [(dx, dk), (dx, jnp.zeros_like(dk)), (jnp.zeros_like(dx), dk)]]
        out.append((jax.vjp(_conv_in_a_loop_body, x, kernel)[1](ct), jax.vjp(_lax_conv, x, kernel)[1](ct)))
        return out

    for ours, ref in pairs():
        for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with jax.enable_x64(True):
        x64, k64 = _normal(0, (1, 4, 5, 2), jnp.float64), _normal(1, (3, 3, 2, 2), jnp.float64)
        w = _normal(2, (1, 4, 5, 2), jnp.float64)

        def objective(conv):
            return lambda x, kernel: jnp.sum(jnp.tanh(conv(x, kernel)) * w)

        hess = jax.jit(jax.hessian(objective(_conv_in_a_loop_body), argnums=(0, 1)))(x64, k64)
        hess_ref = jax.jit(jax.hessian(objective(_lax_conv), argnums=(0, 1)))(x64, k64)
        for got, want in zip(jax.tree.leaves(hess), jax.tree.leaves(hess_ref)):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def _hvp_and_differences(loss, params, direction, eps):
    """(H v by jvp-of-grad, central differences (∇L(p + εv) − ∇L(p − εv)) / 2ε, ∇L·v, (L(p+εv) − L(p−εv)) / 2ε)."""
    grad = jax.grad(loss)
    flat, unravel = ravel_pytree(params)
    v = ravel_pytree(direction)[0]
    hvp = ravel_pytree(jax.jvp(grad, (params,), (direction,))[1])[0]
    plus, minus = unravel(flat + eps * v), unravel(flat - eps * v)
    fd_hvp = (ravel_pytree(grad(plus))[0] - ravel_pytree(grad(minus))[0]) / (2 * eps)
    slope = jnp.vdot(ravel_pytree(grad(params))[0], v)
    return hvp, fd_hvp, slope, (loss(plus) - loss(minus)) / (2 * eps)


def test_decoder_cell_and_flow_hvp_match_central_differences_in_float64():
    """A decoder cell (1×1, depthwise 5×5, BN, SE) and a paired flow (masked depthwise ARConvs), float64."""
    with jax.enable_x64(True):
        cell, flow = DecCell(4, expand=3, rngs=nnx.Rngs(0)), PairedFlow(2, rngs=nnx.Rngs(1))
        graphdef, params, rest = nnx.split((cell, flow), nnx.Param, ...)
        params, rest = jax.tree.map(lambda a: a.astype(jnp.float64), (params, rest))  # BN statistics in rest
        h, z = _normal(2, (2, 6, 6, 4), jnp.float64), _normal(3, (2, 6, 6, 2), jnp.float64)
        w_h, w_z = _normal(4, h.shape, jnp.float64), _normal(5, z.shape, jnp.float64)

        def loss(params):
            cell, flow = nnx.merge(graphdef, params, rest, copy=True)
            return jnp.sum(jnp.tanh(cell(h)) * w_h) + jnp.sum(jnp.tanh(flow(z)[0]) * w_z)

        direction = jax.tree.map(lambda a: jax.random.normal(jax.random.PRNGKey(6), a.shape, a.dtype), params)
        differences = jax.jit(_hvp_and_differences, static_argnums=0, compiler_options=O0)
        hvp, fd_hvp, slope, fd_slope = differences(loss, params, direction, 1e-5)  # errors ~3e-9, ~2e-8 measured
        assert hvp.dtype == jnp.float64
        np.testing.assert_allclose(slope, fd_slope, rtol=1e-7)
        assert jnp.linalg.norm(hvp - fd_hvp) <= 1e-6 * jnp.linalg.norm(hvp)


def _nvae_problem(cfg, beta):
    graphdef, params, rest = nnx.split(NVAE(cfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
    batch = {"image": jax.random.uniform(jax.random.PRNGKey(1), (4, cfg.image_size, cfg.image_size, 1)),
             "beta": jnp.float32(beta)}

    def loss(params):
        return nvae_loss(nnx.merge(graphdef, params, rest, copy=True), batch, jax.random.PRNGKey(2))[0]

    return loss, params


def test_gradient_norm_penalty_traces_on_the_full_nvae_loss():
    """Spectral and BN penalties, KL balancing and flows included; it raised under the old custom_vjp."""
    loss, params = _nvae_problem(dataclasses.replace(configs.DIGITS, num_nf=1), beta=0.5)
    value, grads = jax.eval_shape(gradient_norm_penalty(loss, 0.1), params)
    assert value.shape == () and jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(g.shape == p.shape for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params)))


@pytest.fixture(scope="module")
def nvae_hvp_problem():
    loss, params = _nvae_problem(HVP_CFG, beta=1.0)
    return loss, params, jax.jit(jax.grad(loss), compiler_options=O0)


@pytest.mark.slow
def test_nvae_loss_hvp_matches_central_differences(nvae_hvp_problem):
    """float32: the model keeps latents and likelihoods in float32, so ε = 0.03 (error ~1e-4 measured)."""
    loss, params, grad = nvae_hvp_problem
    flat, unravel = ravel_pytree(params)
    v = jax.random.normal(jax.random.PRNGKey(3), flat.shape)
    v = v / jnp.linalg.norm(v)
    hvp = jax.jit(lambda p, d: jax.jvp(jax.grad(loss), (p,), (d,))[1], compiler_options=O0)(params, unravel(v))
    hvp = ravel_pytree(hvp)[0]
    eps = 0.03
    fd = (ravel_pytree(grad(unravel(flat + eps * v)))[0] - ravel_pytree(grad(unravel(flat - eps * v)))[0]) / (2 * eps)
    assert jnp.linalg.norm(hvp) > 1.0
    assert jnp.linalg.norm(hvp - fd) <= 2e-3 * jnp.linalg.norm(hvp)


@pytest.mark.slow
def test_gradient_norm_penalty_on_nvae_loss(nvae_hvp_problem):
    """value = L + (ε/2)‖g‖², grads = g + ε·H g, H g checked by central differences of ∇L along g."""
    loss, params, grad = nvae_hvp_problem
    eps = 0.1
    value, grads = jax.jit(gradient_norm_penalty(loss, eps), compiler_options=O0)(params)
    flat, unravel = ravel_pytree(params)
    g = ravel_pytree(grad(params))[0]
    loss_value = jax.jit(loss, compiler_options=O0)(params)
    np.testing.assert_allclose(value, loss_value + 0.5 * eps * jnp.vdot(g, g), rtol=1e-5)
    delta = 0.03 / jnp.linalg.norm(g)
    grad_plus, grad_minus = grad(unravel(flat + delta * g)), grad(unravel(flat - delta * g))
    hg_fd = (ravel_pytree(grad_plus)[0] - ravel_pytree(grad_minus)[0]) / (2 * delta)
    hg = (ravel_pytree(grads)[0] - g) / eps
    assert jnp.linalg.norm(hg - hg_fd) <= 2e-3 * jnp.linalg.norm(hg_fd)
