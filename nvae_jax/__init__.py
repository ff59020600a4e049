"""NVAE (Vahdat & Kautz 2020, arXiv 2007.03898) in Flax NNX: a deep hierarchical VAE, trained,
evaluated in bits/dim (nats for binary data) and sampled at temperature. Post: kexue.fm 2020-07-10.
"""
