"""NVAE (Vahdat & Kautz 2020, arXiv 2007.03898) in Flax NNX: a deep hierarchical VAE, trained,
evaluated in bits/dim (nats for binary data) and sampled at temperature. Post: kexue.fm 2020-07-10.
"""

from nvae_jax.configs import CELEBA64, CIFAR10, DIGITS, MNIST, TINY_MNIST, Config
from nvae_jax.layers import (ARConv, SpectralVector, SqueezeExcite, WNConv, ar_conv_mask, bernoulli_log_prob,
                             dmol_log_prob, power_iteration, swish, warm_start_spectral)
from nvae_jax.model import NVAE, ARShiftCell, PairedFlow
