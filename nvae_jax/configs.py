"""NVAE configurations: one frozen dataclass, validated at construction; presets per dataset.

Official hyper-parameters (Vahdat & Kautz 2020, Table 6 / NVlabs/NVAE README) are in the presets
below; see nvae_jax/README.md, "Sources and published numbers".
"""

from __future__ import annotations

import dataclasses

DATASETS = ("digits", "mnist", "cifar10", "celeba64")
OUTPUTS = ("bernoulli", "dmol", "normal")


@dataclasses.dataclass(frozen=True)
class Config:
    """An NVAE model + training configuration. Invalid combinations raise ValueError at construction."""

    dataset: str = "digits"
    image_size: int = 16
    channels_in: int = 1
    output: str = "bernoulli"  # bernoulli | dmol | normal
    num_bits: int = 8
    num_channels: int = 16  # stem width; doubled by each pre-processing block and at each coarser latent scale
    num_preprocess_blocks: int = 1
    num_preprocess_cells: int = 2  # per block, the last one a down cell
    num_postprocess_blocks: int = 1
    num_postprocess_cells: int = 2  # per block, the first one an up cell
    num_latent_scales: int = 2
    num_groups_per_scale: int = 2
    adaptive_groups: bool = False
    min_groups_per_scale: int = 1
    num_latent_per_group: int = 20
    num_cell_per_group_enc: int = 1
    num_cell_per_group_dec: int = 1
    num_nf: int = 0  # paired autoregressive flow cells per latent group (posterior only)
    num_mixtures: int = 10
    use_se: bool = True
    # the identical latent groups of a scale (stored stacked) run under lax.scan ("scan"), so the compiled
    # program does not grow with depth, or in a Python loop ("unroll": same maths, the program grows with the
    # groups). "auto": scan on GPU/TPU, unroll on CPU, where the scanned step is slower
    # (`shared.workarounds.scan_layers_by_default`; nvae_jax/README.md)
    scan_groups: str = "auto"
    # each latent group (encoder and decoder side) under jax.checkpoint: the backward pass keeps only the groups'
    # inputs and recomputes the rest, one more forward of the groups for their activations' memory
    remat_groups: bool = False
    # training
    epochs: int = 400
    batch_size: int = 200  # the global batch, split over every process and device
    learning_rate: float = 1e-2
    learning_rate_min: float = 1e-4
    warmup_epochs: int = 5
    weight_decay: float = 3e-4
    kl_anneal_portion: float = 0.3
    kl_const_portion: float = 1e-4  # official --kl_const_portion: β stays at kl_min_coeff for this part first
    kl_min_coeff: float = 1e-4  # official --kl_const_coeff
    kl_balance: bool = True
    weight_decay_norm: float = 1e-2  # lambda for spectral + BN terms
    weight_decay_norm_anneal: bool = False  # official flag: λ = exp((1−β) log λ_init + β log λ), β the KL coeff
    weight_decay_norm_init: float = 10.0
    # "official": lr from 0 linearly over the warm-up epochs, then cosine stepped per epoch (train.py);
    # "per_step": warm-up from lr·1e-3, cosine per step (the quick digits run's fast setting)
    lr_schedule: str = "official"
    dmol_top_edge: float = 0.999  # 2x−1 above this scores as the top bin; 0.99 is the official code's (see layers)
    random_flip: bool = True  # CIFAR-10 / CelebA-64 training: random horizontal flips, as the official transforms
    test_binarize: str = "stochastic"  # MNIST test images: "stochastic" (official, fixed seed) or "threshold" (0.5)
    bn_readjust_iters: int = 500  # BN re-estimation passes before sampling (official evaluate.py: 500)
    num_power_iter: int = 4
    num_iw_samples: int = 1000
    bf16: bool = False  # bf16 convs/BN/activations (params, latents, KL, likelihood stay float32)
    train_steps: int = 0  # > 0: train this many steps (quick runs); 0: epochs × steps per epoch
    num_eval: int = 200  # test images scored by the IW bound in the experiments
    mock_data: int = 0  # > 0: use tfds.testing.mock_data with this many examples (smoke runs, no data)
    data_dir: str = ""  # TFDS data_dir for the full configs ("" = TFDS default)
    seed: int = 0

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"Config.dataset: unknown dataset {self.dataset!r}; choose one of {DATASETS}")
        if self.output not in OUTPUTS:
            raise ValueError(f"Config.output: unknown output {self.output!r}; choose one of {OUTPUTS}")
        if self.num_groups_per_scale < 1:
            raise ValueError(f"Config.num_groups_per_scale must be >= 1, got {self.num_groups_per_scale}")
        if self.num_latent_scales < 1:
            raise ValueError(f"Config.num_latent_scales must be >= 1, got {self.num_latent_scales}")
        if self.num_latent_per_group < 1:
            raise ValueError(f"Config.num_latent_per_group must be >= 1, got {self.num_latent_per_group}")
        for name in ("num_preprocess_cells", "num_postprocess_cells", "num_cell_per_group_enc",
                     "num_cell_per_group_dec"):
            if getattr(self, name) < 1:
                raise ValueError(f"Config.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_nf < 0:
            raise ValueError(f"Config.num_nf must be >= 0, got {self.num_nf}")
        down = self.total_downsampling
        if self.image_size % down != 0:
            raise ValueError(
                f"Config.image_size={self.image_size} is not divisible by the total downsampling {down} "
                f"(2^(num_preprocess_blocks={self.num_preprocess_blocks} + num_latent_scales-1="
                f"{self.num_latent_scales - 1}))")
        if self.lr_schedule not in ("official", "per_step"):
            raise ValueError(f"Config.lr_schedule must be 'official' or 'per_step', got {self.lr_schedule!r}")
        if self.scan_groups not in ("auto", "scan", "unroll"):
            raise ValueError(f"Config.scan_groups must be 'auto', 'scan' or 'unroll', got {self.scan_groups!r}")
        if self.test_binarize not in ("stochastic", "threshold"):
            raise ValueError(f"Config.test_binarize must be 'stochastic' or 'threshold', got {self.test_binarize!r}")
        if self.output == "dmol" and self.channels_in not in (1, 3):
            raise ValueError(f"Config.channels_in must be 1 or 3 for dmol output, got {self.channels_in}")

    @property
    def total_downsampling(self) -> int:
        return 2 ** (self.num_preprocess_blocks + self.num_latent_scales - 1)

    @property
    def groups(self) -> tuple[int, ...]:
        """Groups per latent scale, finest first."""
        from shared.hvae import groups_per_scale

        return groups_per_scale(self.num_latent_scales, self.num_groups_per_scale, self.adaptive_groups,
                                self.min_groups_per_scale)


DIGITS = Config(dataset="digits", image_size=16, num_channels=8, num_preprocess_blocks=1,
                num_preprocess_cells=1, num_postprocess_blocks=1, num_postprocess_cells=1,
                num_latent_scales=2, num_groups_per_scale=1, num_latent_per_group=4,
                epochs=30, batch_size=32, warmup_epochs=1, num_iw_samples=50, train_steps=200,
                kl_const_portion=0.0, lr_schedule="per_step", bn_readjust_iters=20)
TINY_MNIST = Config(dataset="mnist", image_size=32, num_channels=16, num_preprocess_blocks=1,
                    num_preprocess_cells=2, num_postprocess_blocks=1, num_postprocess_cells=2,
                    num_latent_scales=2, num_groups_per_scale=2, num_latent_per_group=20)
# The full configs follow the official protocol (the field defaults): whole test set (num_eval 0),
# stochastically binarised MNIST test images, 500 BN passes before sampling, the official schedules.
# batch_size is the global batch: the official per-GPU batch times the official GPU count
# (MNIST 200 x 2, CIFAR-10 32 x 8, CelebA-64 16 x 8); an epoch is the dataset over that global batch.
MNIST = Config(dataset="mnist", image_size=32, num_channels=32, num_preprocess_blocks=2,
               num_preprocess_cells=3, num_postprocess_blocks=2, num_postprocess_cells=3,
               num_latent_scales=2, num_groups_per_scale=10, adaptive_groups=True,
               num_cell_per_group_enc=2, num_cell_per_group_dec=2, epochs=400, batch_size=400, num_eval=0)
CIFAR10 = Config(dataset="cifar10", image_size=32, channels_in=3, output="dmol", num_channels=128,
                 num_preprocess_blocks=1, num_preprocess_cells=2, num_postprocess_blocks=1,
                 num_postprocess_cells=2, num_latent_scales=1, num_groups_per_scale=30,
                 num_cell_per_group_enc=2, num_cell_per_group_dec=2, num_nf=1, epochs=400, batch_size=256, num_eval=0)
CELEBA64 = Config(dataset="celeba64", image_size=64, channels_in=3, output="dmol", num_channels=64,
                  num_preprocess_blocks=1, num_preprocess_cells=2, num_postprocess_blocks=1,
                  num_postprocess_cells=2, num_latent_scales=3, num_groups_per_scale=20,
                  adaptive_groups=True, num_cell_per_group_enc=2, num_cell_per_group_dec=2, num_nf=1,
                  epochs=90, batch_size=128, weight_decay_norm=1e-1, num_eval=0)


def smoke(cfg: Config) -> Config:
    """A few-step, tiny-width variant of a full config on TFDS mock data (the `quick` preset of full runs)."""
    return dataclasses.replace(
        cfg, num_channels=8, num_groups_per_scale=min(cfg.num_groups_per_scale, 2), num_latent_per_group=4,
        num_cell_per_group_enc=1, num_cell_per_group_dec=1, num_preprocess_cells=1, num_postprocess_cells=1,
        num_mixtures=min(cfg.num_mixtures, 3), batch_size=8, train_steps=2, num_iw_samples=2, num_eval=8,
        mock_data=16)
