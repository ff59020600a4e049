"""Configs of the rnn_grad experiments (frozen dataclasses; variants via `dataclasses.replace`)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class JacobiansConfig:
    """Sweep of ‖∂s_T/∂s_t‖ vs lag over gains, forget biases and input scales."""

    seed: int = 0
    hidden: int = 64
    length: int = 200
    batch: int = 2
    simple_gains: tuple[float, ...] = (0.8, 0.9, 1.0, 1.2, 1.5)
    input_scales: tuple[float, ...] = (0.1, 1.0)  # first = "small inputs" (metrics key g=<g>)
    gated_gain: float = 1.0
    forget_biases: tuple[float, ...] = (0.0, 1.0, 3.0)
    gated_input_scale: float = 1.0
    min_lag: int = 10
    power_iters: int = 2


JACOBIANS_QUICK = JacobiansConfig()
JACOBIANS_FULL = dataclasses.replace(JacobiansConfig(), hidden=256, length=1000, batch=8,
                                     simple_gains=(0.5, 0.8, 0.9, 1.0, 1.1, 1.2, 1.5, 2.0),
                                     input_scales=(0.01, 0.1, 1.0), forget_biases=(-1.0, 0.0, 1.0, 2.0, 3.0))


@dataclasses.dataclass(frozen=True)
class AddingConfig:
    """Adding problem and copy memory: simple RNN / LSTM / GRU, with and without clipping."""

    seed: int = 0
    tasks: tuple[str, ...] = ("adding", "copy")
    cells: tuple[str, ...] = ("simple", "lstm", "gru")
    lengths: tuple[int, ...] = (50,)
    copy_lengths: tuple[int, ...] = (10,)
    hidden: int = 64
    batch: int = 32
    steps: int = 300
    learning_rate: float = 1e-3
    clip_norm: float = 1.0
    forget_bias: float = 1.0
    gain: float = 1.0
    eval_batch: int = 256
    log_every: int = 10


ADDING_QUICK = dataclasses.replace(AddingConfig(), learning_rate=3e-3, steps=400)
ADDING_FULL = dataclasses.replace(AddingConfig(), lengths=(50, 100, 200), copy_lengths=(50, 100, 200),
                                  hidden=128, batch=64, steps=5000, log_every=50)
