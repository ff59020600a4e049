"""`flooding.cifar10`: the full-scale config, CIFAR-10 with ResNet-18, one run per flood level.

Each level b trains `optax.chain(flooding(b), add_decayed_weights(wd), sgd(cosine lr, momentum))`
(weight decay after flooding, so only the loss gradient changes sign) with pad-4 crop + flip
augmentation in the step; b is chosen on a held-out validation split of the training set and the
chosen run's test accuracy reported. Data: `config.data_dir` holds the CIFAR-10 python release or a
TFDS array_record build (`shared.cifar_files`; tests use small release files and `tfds.testing.mock_data`).
`kexue eval flooding.cifar10 --run DIR` restores every level (or `--model b=0.05`) and reports accuracy,
per-class and balanced error on validation and test (`evaluate_run`).
"""

from __future__ import annotations

import optax

from flooding.configs import CifarConfig
from shared.augment import random_crop_flip
from shared.cifar_files import train_val_test
from shared.classification import make_resnet, num_steps, train_and_evaluate, unit_images
from shared.experiment import RunContext
from shared.transforms import flooding


def xent_augmented(model, batch, rng):
    """Mean CE on crop+flip augmented images [B, 32, 32, 3] uint8; metrics: accuracy."""
    logits = model(random_crop_flip(rng, unit_images(batch["image"])))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, {"accuracy": (logits.argmax(-1) == batch["label"]).mean()}


def make_tx(config: CifarConfig, b: float, num_steps: int) -> optax.GradientTransformation:
    schedule = optax.cosine_decay_schedule(config.learning_rate, num_steps)
    return optax.chain(flooding(b), optax.add_decayed_weights(config.weight_decay),
                       optax.sgd(schedule, momentum=config.momentum))


def train_level(config: CifarConfig, b: float, ctx: RunContext, train_source, eval_sets: dict) -> dict:
    """Trains one flood level; returns {"<split>_accuracy", "<split>_loss"} for each evaluation set."""
    steps = num_steps(config, len(train_source))
    return train_and_evaluate(make_resnet(config.model, 10, config.seed), make_tx(config, b, steps), xent_augmented,
                              config=config, ctx=ctx, train_source=train_source, eval_sets=eval_sets,
                              num_steps=steps, name=f"b={b:g}")


def run(config: CifarConfig, ctx: RunContext) -> dict:
    train_source, eval_sets = train_val_test(config.dataset, config.val_size, config.data_dir)
    results = {f"b={b:g}": train_level(config, b, ctx, train_source, eval_sets) for b in config.flood_levels}
    chosen = max(config.flood_levels, key=lambda b: (results[f"b={b:g}"]["val_accuracy"], -b))
    ctx.report.text(f"{config.model} on {config.dataset}, SGD lr {config.learning_rate} (cosine) momentum "
                    f"{config.momentum}, weight decay {config.weight_decay}, batch {config.batch_size}; flood "
                    f"level chosen on {config.val_size} held-out training images. Published: see paper "
                    f"(Ishida et al. 2020, Table 2; gains mostly below two points).")
    ctx.report.table(["b", "val acc", "test acc", "test loss"],
                     [[b, results[f"b={b:g}"]["val_accuracy"], results[f"b={b:g}"]["test_accuracy"],
                       results[f"b={b:g}"]["test_loss"]] for b in config.flood_levels])
    return {**results, "chosen_b": chosen, "test_accuracy": results[f"b={chosen:g}"]["test_accuracy"]}


def evaluate_run(run) -> dict:
    """`kexue eval flooding.cifar10 --run DIR`: every flood level's checkpoint (or `--model b=B`) on the
    validation and test sets: accuracy, per-class and balanced error; the level chosen on validation
    accuracy as the run chooses it. Writes eval.json and eval.md."""
    from shared.classification import cifar_eval_data, errors_table, evaluate_checkpoints, make_trainer
    from shared.use import write_outputs

    config = run.config
    names = {f"b={b:g}": b for b in config.flood_levels}
    steps, eval_sets = cifar_eval_data(run, names)
    trainers = {name: (lambda b=b: make_trainer(make_resnet(config.model, 10, config.seed), make_tx(config, b, steps),
                                                xent_augmented, config))
                for name, b in names.items() if run.model in (None, name)}
    results = evaluate_checkpoints(run, trainers, eval_sets, 10, config.eval_batch_size)
    chosen = max(results, key=lambda n: (results[n]["val"]["accuracy"], -names[n]))
    metrics = {**results, "chosen": chosen, "test_accuracy": results[chosen]["test"]["accuracy"]}
    write_outputs(run, "eval", metrics, [
        f"# flooding.cifar10: evaluation of {run.path}", errors_table(results),
        f"Chosen on validation accuracy: {chosen}. Published: Ishida et al. 2020, Table 2 (flooding's gains on "
        "CIFAR-10 are mostly below two points)."])
    return metrics
