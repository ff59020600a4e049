"""Official NVlabs/NVAE checkpoints → nvae_jax models and run directories.

    python -m nvae_jax.convert CHECKPOINT.pt OUT_DIR

reads the `checkpoint.pt` that the official `train.py` saves ({"state_dict", "args", "optimizer", ...})
and writes OUT_DIR as a run directory of `nvae_jax.<dataset>` (`config.json` + `checkpoints/<step>`),
which `kexue eval` and `kexue sample` accept. In Python: `from_official(path) -> (model, config)`.

The file is read without torch: it is the zip archive that `torch.save` writes (a pickle plus one raw
little-endian buffer per storage), unpickled by a restricted unpickler that admits only tensors,
containers and `argparse.Namespace` (anything else: not an official NVAE checkpoint).
The layout: conv weights [O, I/g, k, k] → HWIO `v`, `log_weight_norm` [O, 1, 1, 1] → `log_g` [O], linear
weights transposed, BN weight / bias / running statistics → scale / bias / mean / var, `prior_ftr0`
[C, h, w] → `const` [1, h, w, C]. The official code keeps its power-iteration vectors outside the
state_dict, and re-initialises them on resume with 10 × 4 iterations at the first step; the converter
does the same (`warm_start_spectral(model, 40)` on the converted weights), so the run directory holds
parameters, BN statistics and spectral vectors. The optimiser state is not converted (a fresh Adamax).

Bad input (one line, exit code 2 from the command line): a file that is not a zip/pickle checkpoint or has
no `state_dict` / `args`, a truncated file, `args` that select an option nvae_jax does not implement
(named), a state_dict that does not fit the architecture of its `args`.
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import pickle
import sys
import zipfile
from typing import Any

import numpy as np

from nvae_jax.configs import Config
from shared.overrides import ConfigError

__all__ = ["read_checkpoint", "config_from_args", "dmol_channel_order", "load_state_dict", "from_state_dict",
           "from_official", "write_run", "main"]

_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                   "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                   "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}
_DATASETS = {"mnist": ("mnist", 32, 1), "cifar10": ("cifar10", 32, 3), "celeba_64": ("celeba64", 64, 3)}


class _Storage:
    """A storage reference in the pickle: its dtype and key (the archive member `data/<key>`)."""

    def __init__(self, dtype: Any, key: str):
        self.dtype, self.key = dtype, key


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2 in NumPy: a strided view of the storage, copied."""
    if not size:
        return storage[offset].copy()
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * storage.itemsize for s in stride))
    return np.array(view)


class _Unpickler(pickle.Unpickler):
    """Admits the globals a torch-saved NVAE checkpoint uses; storages come from the zip archive."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: str):
        super().__init__(file)
        self.archive, self.prefix, self.path = archive, prefix, path

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, *_: data
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("argparse", "Namespace"):
            return argparse.Namespace
        if (module, name) == ("torch", "device"):
            return str
        raise ConfigError(f"{self.path}: not an official NVAE checkpoint (it pickles {module}.{name})")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise ConfigError(f"{self.path}: not an official NVAE checkpoint (unknown storage record {pid!r:.60})")
        dtype, key = pid[1], str(pid[2])
        if not isinstance(dtype, type):
            raise ConfigError(f"{self.path}: unsupported tensor storage {dtype!r}")
        return np.frombuffer(self.archive.read(f"{self.prefix}data/{key}"), dtype=np.dtype(dtype).newbyteorder("<"))


def read_checkpoint(path: str | pathlib.Path) -> dict:
    """The dictionary in an official checkpoint.pt, tensors as NumPy arrays and `args` as a dict.

    Raises ConfigError (one line) for a missing, truncated or foreign file.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.endswith("data.pkl")]
            if not pickles:
                raise ConfigError(f"{path}: not an official NVAE checkpoint (a zip without data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            byteorder = f"{prefix}byteorder"
            if byteorder in names and archive.read(byteorder).strip() != b"little":
                raise ConfigError(f"{path}: big-endian tensors are not supported")
            with archive.open(pickles[0]) as f:
                obj = _Unpickler(f, archive, prefix, str(path)).load()
    except zipfile.BadZipFile:
        raise ConfigError(f"{path}: not a checkpoint written by torch.save (not a zip archive), or truncated"
                          ) from None
    except (EOFError, pickle.UnpicklingError, KeyError, ValueError, zipfile.LargeZipFile, OSError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{path}: truncated or damaged checkpoint ({type(error).__name__}: {error})"[:300]
                          ) from None
    if not isinstance(obj, dict) or "state_dict" not in obj or "args" not in obj:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ConfigError(f"{path}: not an official NVAE checkpoint (needs 'state_dict' and 'args', has {keys})")
    if isinstance(obj["args"], argparse.Namespace):
        obj["args"] = vars(obj["args"])
    return obj


def config_from_args(args: dict, where: str = "args") -> Config:
    """The nvae_jax Config of an official run's `args` (train.py's argparse fields).

    The global batch is the per-GPU `batch_size` × processes. Options that select an architecture we do
    not implement raise ConfigError naming the option.
    """
    def need(name: str) -> Any:
        if name not in args:
            raise ConfigError(f"{where}: not an official NVAE run's args (no {name!r})")
        return args[name]

    dataset = need("dataset")
    if dataset not in _DATASETS:
        raise ConfigError(f"{where}: dataset={dataset!r} is not implemented (nvae_jax has {sorted(_DATASETS)})")
    arch = need("arch_instance")
    if arch != "res_mbconv":
        raise ConfigError(f"{where}: arch_instance={arch!r} is not implemented (nvae_jax has 'res_mbconv')")
    if not need("res_dist"):
        raise ConfigError(f"{where}: res_dist=False (a non-residual posterior) is not implemented")
    if need("num_channels_enc") != need("num_channels_dec"):
        raise ConfigError(f"{where}: num_channels_enc={args['num_channels_enc']} != num_channels_dec="
                          f"{args['num_channels_dec']} is not implemented (one width for both)")
    if need("num_latent_scales") == 1 and need("num_groups_per_scale") == 1:
        raise ConfigError(f"{where}: num_latent_scales=1 with num_groups_per_scale=1 (the official vanilla VAE) "
                          "is not implemented")
    name, size, channels = _DATASETS[dataset]
    mixtures = int(args.get("num_mixture_dec", 10))
    output = "bernoulli" if name == "mnist" else "normal" if mixtures == 1 else "dmol"
    gpus = int(args.get("num_process_per_node", 1)) * int(args.get("num_proc_node", 1))
    try:
        return Config(
            dataset=name, image_size=size, channels_in=channels, output=output, num_bits=int(args.get("num_x_bits", 8)),
            num_channels=int(args["num_channels_enc"]), num_preprocess_blocks=int(need("num_preprocess_blocks")),
            num_preprocess_cells=int(need("num_preprocess_cells")),
            num_postprocess_blocks=int(need("num_postprocess_blocks")),
            num_postprocess_cells=int(need("num_postprocess_cells")),
            num_latent_scales=int(args["num_latent_scales"]), num_groups_per_scale=int(args["num_groups_per_scale"]),
            adaptive_groups=bool(need("ada_groups")), min_groups_per_scale=int(args.get("min_groups_per_scale", 1)),
            num_latent_per_group=int(need("num_latent_per_group")),
            num_cell_per_group_enc=int(need("num_cell_per_cond_enc")),
            num_cell_per_group_dec=int(need("num_cell_per_cond_dec")), num_nf=int(args.get("num_nf", 0)),
            num_mixtures=max(mixtures, 1), use_se=bool(need("use_se")), epochs=int(args.get("epochs", 400)),
            batch_size=int(args.get("batch_size", 200)) * gpus,
            learning_rate=float(args.get("learning_rate", 1e-2)),
            learning_rate_min=float(args.get("learning_rate_min", 1e-4)),
            warmup_epochs=int(args.get("warmup_epochs", 5)), weight_decay=float(args.get("weight_decay", 3e-4)),
            kl_anneal_portion=float(args.get("kl_anneal_portion", 0.3)),
            kl_const_portion=float(args.get("kl_const_portion", 1e-4)),
            kl_min_coeff=float(args.get("kl_const_coeff", 1e-4)),
            weight_decay_norm=float(args.get("weight_decay_norm", 0.0)),
            weight_decay_norm_anneal=bool(args.get("weight_decay_norm_anneal", False)),
            weight_decay_norm_init=float(args.get("weight_decay_norm_init", 10.0)),
            dmol_top_edge=0.99, num_eval=0, seed=int(args.get("seed", 1)))
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


class _StateDict:
    """The official tensors by name, taken one by one; BN layers may sit under a SyncBatchNorm's `.bn`.

    Skipped: BN's `num_batches_tracked`, and `weight_normalized`, which the official plain (not
    weight-normalised) convs register as a second name of their `weight`.
    """

    def __init__(self, tensors: dict[str, np.ndarray], where: str):
        self.tensors = {k: v for k, v in tensors.items()
                        if not k.endswith(("num_batches_tracked", ".weight_normalized"))}
        self.where = where

    def take(self, key: str) -> np.ndarray:
        for k in (key, key.replace(".weight", ".bn.weight").replace(".bias", ".bn.bias")
                  .replace(".running_mean", ".bn.running_mean").replace(".running_var", ".bn.running_var")):
            if k in self.tensors:
                return np.asarray(self.tensors.pop(k), np.float32)
        raise ConfigError(f"{self.where}: the state_dict has no {key!r}; it does not fit the architecture of its args")

    def put(self, variable: Any, value: np.ndarray, key: str) -> None:
        import jax.numpy as jnp

        if tuple(variable.shape) != value.shape:
            raise ConfigError(f"{self.where}: {key} has shape {value.shape}, the model of its args needs "
                              f"{tuple(variable.shape)}")
        variable.set_value(jnp.asarray(value))

    def conv(self, prefix: str, conv: Any, order: np.ndarray | None = None) -> None:
        """A conv; `order[j]` is the official output channel of our channel j (default: the same)."""
        pick = slice(None) if order is None else order
        self.put(conv.v, self.take(f"{prefix}.weight")[pick].transpose(2, 3, 1, 0), f"{prefix}.weight")
        if conv.log_g is not None:
            self.put(conv.log_g, self.take(f"{prefix}.log_weight_norm").reshape(-1)[pick],
                     f"{prefix}.log_weight_norm")
        if conv.bias is not None:
            self.put(conv.bias, self.take(f"{prefix}.bias")[pick], f"{prefix}.bias")

    def bn(self, prefix: str, bn: Any) -> None:
        for ours, theirs in (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"), ("var", "running_var")):
            self.put(getattr(bn, ours), self.take(f"{prefix}.{theirs}"), f"{prefix}.{theirs}")

    def se(self, prefix: str, se: Any) -> None:
        if se is None:
            return
        for fc, i in ((se.fc1, 0), (se.fc2, 2)):
            self.put(fc.kernel, self.take(f"{prefix}.se.{i}.weight").T, f"{prefix}.se.{i}.weight")
            self.put(fc.bias, self.take(f"{prefix}.se.{i}.bias"), f"{prefix}.se.{i}.bias")

    def enc_cell(self, prefix: str, cell: Any) -> None:
        """`res_bnswish` ×2 cell: _ops.{0,1}.{bn_act, conv_0}, se, FactorizedReduce skip.conv_{1..4}."""
        for i, (bn, conv) in enumerate(((cell.bn1, cell.c1), (cell.bn2, cell.c2))):
            self.bn(f"{prefix}._ops.{i}.bn_act", bn)
            self.conv(f"{prefix}._ops.{i}.conv_0", conv)
        self.se(f"{prefix}.se", cell.se)
        if cell.skip is not None:
            for i, conv in enumerate(cell.skip.convs):
                self.conv(f"{prefix}.skip.conv_{i + 1}", conv)

    def dec_cell(self, prefix: str, cell: Any) -> None:
        """`mconv` cell: _ops.0.conv = [nearest ×2 (up only)], BN, ConvBNSwish 1×1, ConvBNSwish dw, 1×1, BN."""
        q, o = f"{prefix}._ops.0.conv", int(cell.skip is not None)
        self.bn(f"{q}.{o}", cell.bn0)
        self.conv(f"{q}.{o + 1}.conv.0", cell.c1)
        self.bn(f"{q}.{o + 1}.conv.1", cell.bn1)
        self.conv(f"{q}.{o + 2}.conv.0", cell.dw)
        self.bn(f"{q}.{o + 2}.conv.1", cell.bn2)
        self.conv(f"{q}.{o + 3}", cell.c2)
        self.bn(f"{q}.{o + 4}", cell.bn3)
        self.se(f"{prefix}.se", cell.se)
        if cell.skip is not None:
            self.conv(f"{prefix}.skip.1", cell.skip.conv)

    def flow(self, prefix: str, flow: Any) -> None:
        for name in ("cell1", "cell2"):
            cell = getattr(flow, name)
            self.conv(f"{prefix}.{name}.conv.convz.0", cell.c1)
            self.conv(f"{prefix}.{name}.conv.convz.2", cell.dw)
            self.conv(f"{prefix}.{name}.mu.conv_0", cell.mu)


def dmol_channel_order(num_mix: int) -> np.ndarray:
    """Official DMoL output channel of each of ours (RGB): ours hold (logits [M], then [kind, colour, M]),
    the official (logits [M], then [colour, kind, M]), kind = mean, log scale, coupling coefficient."""
    m = num_mix
    ours = [np.arange(m)] + [m + c * 3 * m + k * m + np.arange(m) for k in range(3) for c in range(3)]
    return np.concatenate(ours)


def load_state_dict(model: Any, tensors: dict[str, np.ndarray], where: str = "state_dict") -> None:
    """Sets every parameter and BN statistic of `model` (an `NVAE`) from an official state_dict.

    Raises ConfigError naming the first missing, extra or misshapen tensor.
    """
    sd = _StateDict(tensors, where)
    cfg = model.cfg
    sd.conv("stem", model.stem)
    for i, cell in enumerate(model.pre):
        sd.enc_cell(f"pre_process.{i}", cell)
    groups, enc_groups = model.latent_groups(), model.encoder_groups()  # per-group copies, stored back below
    num_groups, k, g_enc = len(groups), 0, 0
    for s, count in enumerate(cfg.groups):  # cells and combiners interleaved, as enc_tower; finest scale first
        for _ in range(count):
            for cell in enc_groups[g_enc]:
                sd.enc_cell(f"enc_tower.{k}", cell)
                k += 1
            if g_enc < num_groups - 1:  # the combiner of encoder group g feeds decoder group G − 1 − g
                sd.conv(f"enc_tower.{k}.conv", groups[num_groups - 1 - g_enc].comb_enc)
                k += 1
            g_enc += 1
        if s < len(cfg.groups) - 1:
            sd.enc_cell(f"enc_tower.{k}", model.enc_down[s])
            k += 1
    sd.conv("enc0.1", model.enc0)
    k, gi = 0, 0
    for s, count in enumerate(reversed(cfg.groups)):
        for _ in range(count):
            group = groups[gi]
            sd.conv(f"enc_sampler.{gi}", group.posterior)
            if group.prior is not None:
                sd.conv(f"dec_sampler.{gi - 1}.1", group.prior)
            for n, flow in enumerate(group.flows):
                sd.flow(f"nf_cells.{gi * cfg.num_nf + n}", flow)
            for cell in group.cells:
                sd.dec_cell(f"dec_tower.{k}", cell)
                k += 1
            sd.conv(f"dec_tower.{k}.conv", group.comb_dec)
            k, gi = k + 1, gi + 1
        if s < len(cfg.groups) - 1:
            sd.dec_cell(f"dec_tower.{k}", model.ups[s])
            k += 1
    model.set_encoder_groups(enc_groups)
    model.set_latent_groups(groups)
    for i, cell in enumerate(model.post):
        sd.dec_cell(f"post_process.{i}", cell)
    sd.conv("image_conditional.1", model.head, dmol_channel_order(cfg.num_mixtures) if cfg.output == "dmol" else None)
    sd.put(model.const, sd.take("prior_ftr0").transpose(1, 2, 0)[None], "prior_ftr0")
    if sd.tensors:
        extra = sorted(sd.tensors)
        raise ConfigError(f"{where}: {len(extra)} tensors do not fit the architecture of its args, e.g. {extra[0]!r}")


def from_state_dict(tensors: dict[str, np.ndarray], args: dict, where: str = "checkpoint") -> tuple[Any, Config]:
    """(NVAE in eval mode with the official weights, BN statistics and warm-started spectral vectors, Config)."""
    from flax import nnx

    from nvae_jax.model import NVAE

    config = config_from_args(args, f"{where}: args")
    model = NVAE(config, rngs=nnx.Rngs(config.seed))
    _load_into(model, tensors, where)
    return model, config


def _load_into(model: Any, tensors: dict[str, np.ndarray], where: str) -> None:
    from nvae_jax.layers import warm_start_spectral

    load_state_dict(model, tensors, f"{where}: state_dict")
    warm_start_spectral(model, 40)  # the official first spectral step: 10 × num_power_iter iterations
    model.eval()


def from_official(path: str | pathlib.Path) -> tuple[Any, Config]:
    """An official checkpoint.pt as (model, config); see `from_state_dict`."""
    checkpoint = read_checkpoint(path)
    return from_state_dict(checkpoint["state_dict"], checkpoint["args"], str(path))


def write_run(path: str | pathlib.Path, out_dir: str | pathlib.Path) -> pathlib.Path:
    """Converts `path` into the run directory `out_dir` of `nvae_jax.<dataset>` (config.json, checkpoints/<step>).

    The checkpoint's step is the official `global_step`; the optimiser state is a fresh Adamax state.
    """
    from flax import nnx

    from nvae_jax import train
    from shared.checkpoint import Checkpointer
    from shared.report import to_jsonable
    from shared.train import split_model

    checkpoint = read_checkpoint(path)
    config = config_from_args(checkpoint["args"], f"{path}: args")
    out = pathlib.Path(out_dir)
    if (out / "checkpoints").exists():
        raise ConfigError(f"{out}: already holds checkpoints; choose a new directory")
    trainer = train.make_trainer(config, 2)  # builds the model once; the schedule does not shape the state
    model = nnx.merge(trainer.graphdef, trainer.state.params, trainer.state.model_state)
    _load_into(model, checkpoint["state_dict"], str(path))
    _, params, model_state = split_model(model)
    step = int(checkpoint.get("global_step", 0) or 0)
    state = trainer.state.replace(params=params, model_state=model_state, step=np.int32(step))
    out.mkdir(parents=True, exist_ok=True)
    experiment = f"nvae_jax.{config.dataset}"
    (out / "config.json").write_text(json.dumps({"_experiment": experiment, **to_jsonable(config)}, indent=2))
    checkpointer = Checkpointer(out / "checkpoints", async_save=False)
    try:
        checkpointer.save(step, state, config=config)
        checkpointer.wait()
    finally:
        checkpointer.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m nvae_jax.convert CHECKPOINT.pt OUT_DIR`; bad input: one line on stderr, exit code 2."""
    ap = argparse.ArgumentParser(prog="python -m nvae_jax.convert", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="an official NVAE checkpoint.pt (as its train.py saves it)")
    ap.add_argument("out_dir", help="the run directory to write (kexue eval / kexue sample read it)")
    args = ap.parse_args(argv)
    try:
        out = write_run(args.checkpoint, args.out_dir)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = json.loads((out / "config.json").read_text())
    print(f"wrote {out} ({config['_experiment']}); kexue eval {config['_experiment']} --run {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
