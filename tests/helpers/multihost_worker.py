"""One process of the two-process test: 4 CPU devices each, jax.distributed on localhost."""

import sys

import jax

pid, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                           initialization_timeout=120)

import numpy as np  # noqa: E402

sys.path.insert(0, __file__.rsplit("/helpers/", 1)[0])
from helpers.sharded_steps import host_params, run_steps, runner  # noqa: E402

assert jax.device_count() == 8 and jax.local_device_count() == 4
state, fn, place, _ = runner("data=2,fsdp=2,tensor=2")
state, metrics = run_steps(state, fn, place, 0, 3)
params = host_params(state)
if jax.process_index() == 0:
    np.savez(out, **params, **{f"metric.{i}.total": m["total"] for i, m in enumerate(metrics)})
jax.distributed.shutdown()
