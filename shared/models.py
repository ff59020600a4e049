"""Models every package can use, in Flax NNX: an MLP, a small CNN and the CIFAR ResNets.

- `MLP`: Linear layers with an activation between them (optional bias and BatchNorm).
- `SmallCNN`: two 3x3 conv blocks and a linear head, for 8x8 digits or 32x32 images.
- `CifarResNet` / `cifar_resnet(depth)`: ResNet-20/32/44/56 of He et al. (2016, Sec. 4.2): 3 stages of
  n = (depth - 2) / 6 basic blocks with 16/32/64 channels, identity shortcuts with zero padding
  ("option A"); ResNet-32 has 0.46M parameters.
- `ResNet18`: the 4-stage ResNet-18 with a 3x3 stem for 32x32 inputs (the usual CIFAR adaptation).
- `LogitAdjustmentResNet` / `la_resnet32`: the "ResNet-32" of the official logit-adjustment code
  (google-research `logit_adjustment/models.py`, Menon et al. 2021): 1x1/3x3/1x1 blocks, conv shortcuts,
  a final BatchNorm before the pool; 300,762 parameters for 10 classes.

All take images NHWC and return logits [B, num_classes]. BatchNorm follows `model.train()` /
`model.eval()`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

Activation = Callable[[jax.Array], jax.Array]


class MLP(nnx.Module):
    """x [B, ...] -> flatten -> (Linear -> [BatchNorm] -> act) x (len(features) - 1) -> Linear.

    Args:
      features: widths including input and output, e.g. (64, 128, 128, 10).
      use_bias: bias in the linear layers.
      batch_norm: BatchNorm after every hidden linear layer (the flooding paper's MLP uses
        Linear without bias -> BatchNorm -> ReLU).
    """

    def __init__(self, features: Sequence[int], *, rngs: nnx.Rngs, activation: Activation = nnx.relu,
                 use_bias: bool = True, batch_norm: bool = False, dtype: DTypeLike | None = None):
        if len(features) < 2 or min(features) < 1:
            raise ValueError(f"MLP features must be >= 2 positive widths, got {tuple(features)}")
        self.activation = activation
        self.layers = nnx.List([nnx.Linear(i, o, use_bias=use_bias, dtype=dtype, rngs=rngs)
                                for i, o in itertools.pairwise(features)])
        self.norms = nnx.data(nnx.List([nnx.BatchNorm(o, momentum=0.9, dtype=dtype, rngs=rngs)
                                        for o in features[1:-1]]) if batch_norm else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for i, layer in enumerate(self.layers[:-1]):
            x = layer(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = self.activation(x)
        return self.layers[-1](x)


class SmallCNN(nnx.Module):
    """[B, H, W, C] -> conv3x3(c1)-ReLU-pool2 -> conv3x3(c2)-ReLU -> global mean -> Linear -> [B, K]."""

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs, in_channels: int = 1,
                 channels: tuple[int, int] = (32, 64), dtype: DTypeLike | None = None):
        self.conv1 = nnx.Conv(in_channels, channels[0], (3, 3), dtype=dtype, rngs=rngs)
        self.conv2 = nnx.Conv(channels[0], channels[1], (3, 3), dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(channels[1], num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.conv1(x))
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x = nnx.relu(self.conv2(x))
        return self.head(x.mean(axis=(1, 2)))


def _bn(channels: int, rngs: nnx.Rngs, dtype) -> nnx.BatchNorm:
    return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=rngs)


class BasicBlock(nnx.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, then ReLU (He et al. 2016, Fig. 2).

    shortcut="pad": parameter-free option A (stride-2 subsampling, zero-padded channels; CIFAR ResNets);
    shortcut="conv": 1x1 conv + BN projection (option B; ResNet-18).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs, shortcut: str = "pad",
                 dtype: DTypeLike | None = None):
        self.conv1 = nnx.Conv(in_ch, out_ch, (3, 3), strides=stride, use_bias=False, dtype=dtype, rngs=rngs)
        self.bn1 = _bn(out_ch, rngs, dtype)
        self.conv2 = nnx.Conv(out_ch, out_ch, (3, 3), use_bias=False, dtype=dtype, rngs=rngs)
        self.bn2 = _bn(out_ch, rngs, dtype)
        self.stride, self.extra = stride, out_ch - in_ch
        needs_projection = stride != 1 or in_ch != out_ch
        project = needs_projection and shortcut == "conv"
        self.proj = nnx.data(nnx.Conv(in_ch, out_ch, (1, 1), strides=stride, use_bias=False, dtype=dtype,
                                      rngs=rngs) if project else None)
        self.proj_bn = nnx.data(_bn(out_ch, rngs, dtype) if project else None)

    def _shortcut(self, x: jax.Array) -> jax.Array:
        if self.proj is not None and self.proj_bn is not None:
            return self.proj_bn(self.proj(x))
        if self.stride != 1:
            x = x[:, ::self.stride, ::self.stride, :]
        if self.extra:
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (self.extra // 2, self.extra - self.extra // 2)))
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nnx.relu(y + self._shortcut(x))


class CifarResNet(nnx.Module):
    """ResNet for 32x32 inputs: stem conv3x3 -> stages of BasicBlocks -> global pool -> Linear.

    Args:
      blocks_per_stage: e.g. (5, 5, 5) for ResNet-32.
      widths: channels per stage, e.g. (16, 32, 64).
      shortcut: "pad" (option A) or "conv" (option B).
    """

    def __init__(self, blocks_per_stage: Sequence[int], widths: Sequence[int], num_classes: int, *,
                 rngs: nnx.Rngs, in_channels: int = 3, shortcut: str = "pad", dtype: DTypeLike | None = None):
        self.stem = nnx.Conv(in_channels, widths[0], (3, 3), use_bias=False, dtype=dtype, rngs=rngs)
        self.stem_bn = _bn(widths[0], rngs, dtype)
        blocks, in_ch = [], widths[0]
        for stage, (n, width) in enumerate(zip(blocks_per_stage, widths)):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(in_ch, width, stride, rngs=rngs, shortcut=shortcut, dtype=dtype))
                in_ch = width
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(in_ch, num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(axis=(1, 2)))


def cifar_resnet(depth: int, num_classes: int, *, rngs: nnx.Rngs, dtype: DTypeLike | None = None) -> CifarResNet:
    """ResNet-{20, 32, 44, 56, 110} of He et al. for CIFAR (depth = 6n + 2)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth}")
    n = (depth - 2) // 6
    return CifarResNet((n, n, n), (16, 32, 64), num_classes, rngs=rngs, dtype=dtype)


def ResNet18(num_classes: int, *, rngs: nnx.Rngs, in_channels: int = 3, dtype: DTypeLike | None = None) -> CifarResNet:
    """ResNet-18 (2, 2, 2, 2 blocks of 64/128/256/512) with a 3x3 stem and projection shortcuts."""
    return CifarResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, rngs=rngs,
                       in_channels=in_channels, shortcut="conv", dtype=dtype)


class ThreeConvBlock(nnx.Module):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1-BN + shortcut, then ReLU; all convs `width` filters.

    shortcut: conv1x1(stride)-BN when `project` (the first block of a stage), else the identity
    (which needs in_ch == width and stride 1). The stride sits on the 3x3 conv ("SAME" padding).
    """

    def __init__(self, in_ch: int, width: int, stride: int, *, project: bool, rngs: nnx.Rngs,
                 dtype: DTypeLike | None = None):
        if not project and (in_ch != width or stride != 1):
            raise ValueError(f"an identity shortcut needs in_ch == width and stride 1, got {in_ch}, {width}, {stride}")
        conv = functools.partial(nnx.Conv, use_bias=False, kernel_init=nnx.initializers.he_normal(), dtype=dtype,
                                 rngs=rngs)
        self.conv1, self.bn1 = conv(in_ch, width, (1, 1)), _bn(width, rngs, dtype)
        self.conv2, self.bn2 = conv(width, width, (3, 3), strides=stride), _bn(width, rngs, dtype)
        self.conv3, self.bn3 = conv(width, width, (1, 1)), _bn(width, rngs, dtype)
        self.proj = nnx.data(conv(in_ch, width, (1, 1), strides=stride, padding="VALID") if project else None)
        self.proj_bn = nnx.data(_bn(width, rngs, dtype) if project else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.proj is None or self.proj_bn is None else self.proj_bn(self.proj(x))
        return nnx.relu(y + shortcut)


class LogitAdjustmentResNet(nnx.Module):
    """The CIFAR network of the official logit-adjustment code (google-research `logit_adjustment/models.py`).

    [B, 32, 32, C] -> zero-pad 3 -> conv3x3 "VALID" (`widths[0]`) -> BN -> ReLU ([B, 36, 36, .]) -> per stage
    one `ThreeConvBlock` with a conv shortcut and stride (1, 2, 2), then identity blocks -> BN (no ReLU)
    -> mean over H, W -> Linear -> [B, num_classes]. Convs: no bias, He-normal (truncated, fan-in) kernels;
    head: kernel N(0, 0.01²), zero bias; BatchNorm momentum 0.9, eps 1e-5 (Keras's settings there).
    """

    def __init__(self, blocks_per_stage: Sequence[int], widths: Sequence[int], num_classes: int, *,
                 rngs: nnx.Rngs, in_channels: int = 3, dtype: DTypeLike | None = None):
        self.stem = nnx.Conv(in_channels, widths[0], (3, 3), padding="VALID", use_bias=False,
                             kernel_init=nnx.initializers.he_normal(), dtype=dtype, rngs=rngs)
        self.stem_bn = _bn(widths[0], rngs, dtype)
        blocks, in_ch = [], widths[0]
        for stage, (n, width) in enumerate(zip(blocks_per_stage, widths)):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(ThreeConvBlock(in_ch, width, stride, project=b == 0, rngs=rngs, dtype=dtype))
                in_ch = width
        self.blocks = nnx.List(blocks)
        self.final_bn = _bn(in_ch, rngs, dtype)
        self.head = nnx.Linear(in_ch, num_classes, kernel_init=nnx.initializers.normal(0.01), dtype=dtype,
                               rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))  # [B, H + 6, W + 6, C]
        x = nnx.relu(self.stem_bn(self.stem(x)))  # [B, H + 4, W + 4, widths[0]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_bn(x).mean(axis=(1, 2)))  # [B, num_classes]


def la_resnet32(num_classes: int, *, rngs: nnx.Rngs, dtype: DTypeLike | None = None) -> LogitAdjustmentResNet:
    """The official logit-adjustment "ResNet-32": stages of 5 blocks with 16 / 32 / 64 filters."""
    return LogitAdjustmentResNet((5, 5, 5), (16, 32, 64), num_classes, rngs=rngs, dtype=dtype)


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
