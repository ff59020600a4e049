"""kexue-jax shared building blocks: hierarchical-latent layers, sparse softmax, classification losses,
optax-compatible transforms (flooding, gradient-norm penalty, WEISSI), the UniLM encoder and its
KV-cached decoder, models and augmentation, data pipelines, and the training / experiment harness.

Public modules: `shared.train`, `shared.data`, `shared.models`, `shared.augment`, `shared.losses`,
`shared.sparse_softmax`, `shared.transforms`, `shared.hvae`, `shared.unilm`, `shared.decoding`,
`shared.experiment`, `shared.report`, `shared.cli`.
"""
