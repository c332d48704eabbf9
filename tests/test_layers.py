"""`layers.Dense` and `layers.gelu` against Flax's `nn.Dense` and `jax.nn.gelu`: the same
parameters, values and gradients (their only purpose is speed), and the compiled form that makes
them fast on CPU."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from augpro_jax import layers


def _inputs(shape, seed=0):
  return jnp.asarray(np.random.RandomState(seed).randn(*shape).astype(np.float32))


@pytest.mark.parametrize("shape,use_bias", [((3, 5, 8), True), ((4, 8), False),
                                            ((2, 3, 4, 8), True)])
def test_dense_is_flax_dense_in_parameters_values_and_gradients(shape, use_bias):
  ours = layers.Dense(6, use_bias=use_bias, kernel_init=nn.initializers.normal(0.5),
                      bias_init=nn.initializers.normal(0.5))
  flax_dense = nn.Dense(6, use_bias=use_bias, param_dtype=jnp.float32,
                        kernel_init=nn.initializers.normal(0.5),
                        bias_init=nn.initializers.normal(0.5))
  x = _inputs(shape)
  params = ours.init(jax.random.PRNGKey(0), x)
  flax_params = flax_dense.init(jax.random.PRNGKey(0), x)
  # The same names, shapes and initial values: checkpoints and imported weights are unchanged.
  assert jax.tree.structure(params) == jax.tree.structure(flax_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(flax_params)):
    np.testing.assert_array_equal(a, b)
  cotangent = _inputs(shape[:-1] + (6,), seed=1)

  def grads(module):
    loss = lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)) * cotangent)
    return jax.grad(loss, argnums=(0, 1))(params, x)

  np.testing.assert_allclose(ours.apply(params, x), flax_dense.apply(params, x),
                             rtol=1e-6, atol=1e-6)
  ours_grads, flax_grads = grads(ours), grads(flax_dense)
  for a, b in zip(jax.tree.leaves(ours_grads), jax.tree.leaves(flax_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_dense_computes_in_its_dtype_with_float32_parameters():
  x = _inputs((2, 3, 8))
  dense = layers.Dense(4, dtype=jnp.bfloat16)
  params = dense.init(jax.random.PRNGKey(0), x)
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  assert dense.apply(params, x).dtype == jnp.bfloat16
  bias_grad = jax.grad(lambda p: jnp.sum(dense.apply(p, x).astype(jnp.float32)))(params)
  assert bias_grad["params"]["bias"].dtype == jnp.float32
  np.testing.assert_allclose(bias_grad["params"]["bias"], np.full(4, 6.0))


def test_bias_gradient_is_the_sum_over_every_leading_axis():
  grad = _inputs((3, 4, 5))
  _, vjp = jax.vjp(layers.add_bias, jnp.zeros((3, 4, 5)), jnp.zeros(5))
  d_y, d_bias = vjp(grad)
  np.testing.assert_array_equal(d_y, grad)
  np.testing.assert_allclose(d_bias, np.asarray(grad).sum(axis=(0, 1)), rtol=1e-6)


def test_dense_backward_has_no_transposed_copy_of_the_cotangent():
  """The compiled gradient of a [batch, seq, in] layer is two plain matmuls and a bias product:
  with [batch, seq] contracted as two dimensions XLA:CPU copied the cotangent transposed first."""
  dense = layers.Dense(48)
  x = _inputs((4, 16, 24))
  params = dense.init(jax.random.PRNGKey(0), x)
  backward = jax.jit(lambda p, x, ct: jax.vjp(dense.apply, p, x)[1](ct))
  hlo = backward.lower(params, x, jnp.ones((4, 16, 48))).compile().as_text()
  copies = re.findall(r"%\S*(?:transpose|copy)\S* = ", hlo)
  assert not copies, hlo
  assert hlo.count(" dot(") == 3  # the kernel's, the input's and the bias's gradients


def test_gelu_is_the_exact_gelu():
  x = jnp.linspace(-12.0, 12.0, 4001)
  np.testing.assert_allclose(layers.gelu(x), jax.nn.gelu(x, approximate=False),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.vmap(jax.grad(layers.gelu))(x),
                             jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(x),
                             rtol=1e-5, atol=1e-6)
  # Not the tanh approximation, which differs by up to about 5e-4.
  assert float(jnp.max(jnp.abs(layers.gelu(x) - jax.nn.gelu(x, approximate=True)))) > 1e-4
