"""NVAE (Vahdat & Kautz 2020, arXiv 2007.03898) in Flax NNX: a deep hierarchical VAE, trained,
evaluated in bits/dim (nats for binary data) and sampled at temperature. Post: kexue.fm 2020-07-10.
"""

from nvae_jax.configs import CELEBA64, CIFAR10, DIGITS, MNIST, TINY_MNIST, Config
from shared.lazy import lazy_exports

# every other name loads its module on first use (`kexue list` must not import jax)
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "layers": (
        "ARConv", "SpectralVector", "SqueezeExcite", "WNConv", "ar_conv_mask", "bernoulli_log_prob",
        "dmol_log_prob", "power_iteration", "swish", "warm_start_spectral"
    ),
    "model": ("NVAE", "ARShiftCell", "PairedFlow"),
    "evaluate": ("negative_elbo", "iw_nll", "nats_to_bpd"),
    "convert": ("from_official",),
}, eager=("CELEBA64", "CIFAR10", "DIGITS", "MNIST", "TINY_MNIST", "Config"))
