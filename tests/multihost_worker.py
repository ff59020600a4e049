"""One process of the multi-host test: `python multihost_worker.py ADDR NUM_PROCESSES PROCESS_ID DEVICES`.

Trains the digits MLP for a few steps on one global mesh, loading only this process's share of every
batch, and prints a JSON line with the losses and the local batch size.
"""

import json
import os
import sys

addr, num_processes, process_id, num_devices = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
if num_processes > 1:
    jax.distributed.initialize(addr, num_processes, process_id)

from shared import data, train  # noqa: E402
from shared.digits_mlp import Config, build  # noqa: E402

mesh = train.make_mesh()
state, train_step, _, dataset = build(Config(hidden=(64,), batch_size=64), mesh,
                                      jax.process_index(), jax.process_count())
iterator = data.make_iterator(dataset)
losses, local_sizes = [], []
for _ in range(15):
    batch = next(iterator)
    local_sizes.append(len(batch["label"]))
    state, metrics = train_step(state, train.shard_batch(batch, mesh))
    losses.append(float(metrics["loss"]))
print(json.dumps({"process": jax.process_index(), "global_devices": jax.device_count(),
                  "local_batch": sorted(set(local_sizes)), "losses": losses}), flush=True)
