"""The experiments `kexue` can run for `mwp`."""

from shared.experiment import Experiment

from mwp import configs


def _run_synthetic(config, ctx):
    from mwp.solver import run_synthetic

    return run_synthetic(config, ctx)


def _run_ape210k(config, ctx):
    from mwp.ape210k import run_ape210k

    return run_ape210k(config, ctx)


EXPERIMENTS: dict[str, Experiment] = {
    "synthetic_solver": Experiment(
        "mwp.synthetic_solver", _run_synthetic,
        {"quick": configs.SYNTHETIC_QUICK, "full": configs.SYNTHETIC_FULL},
        "small UniLM from scratch on synthetic Chinese word problems; answer accuracy, beam 1/2/3"),
    "ape210k": Experiment(
        "mwp.ape210k", _run_ape210k,
        {"quick": configs.APE210K_QUICK, "full": configs.APE210K_FULL, "large": configs.APE210K_LARGE},
        "BERT UniLM fine-tuned on the real Ape210K files (local data + HF checkpoint), beam 1/2/3",
        reproduce=False),
}
