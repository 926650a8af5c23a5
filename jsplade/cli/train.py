"""jsplade-train: train a sparse encoder from a small TOML config.

    jsplade-train CONFIG.toml [--base-model DIR_OR_HUB_ID] [--output-dir DIR] [--set key=value ...]

Every setting is documented in ``jsplade.training.config.TrainConfig``; ``--set`` overrides any of them
(values parsed as TOML: numbers, booleans, strings, lists). Errors in the config or the data are reported
before any compute, with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib

from jsplade.cli.common import add_verbose_flag, setup_logging


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jsplade-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="TOML training config (see train/configs/)")
    parser.add_argument("--base-model", help="SparseEncoder directory or hub id (overrides the config)")
    parser.add_argument("--output-dir", help="run directory (overrides the config)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    dist = parser.add_argument_group("multi-host (one process per host; see train/README.md)")
    dist.add_argument("--distributed", action="store_true",
                      help="call jax.distributed.initialize() (TPU pods, SLURM, GKE: arguments auto-detected)")
    dist.add_argument("--coordinator", help="host:port of process 0 (GPU clusters without auto-detection)")
    dist.add_argument("--num-processes", type=int, help="number of processes (hosts)")
    dist.add_argument("--process-id", type=int, help="index of this process")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    if args.distributed or args.coordinator:
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes: collectives over TCP
        kwargs = {}
        if args.coordinator:
            kwargs = dict(coordinator_address=args.coordinator, num_processes=args.num_processes,
                          process_id=args.process_id)
        jax.distributed.initialize(**kwargs)
        logging.getLogger("jsplade").info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
                     jax.local_device_count(), jax.device_count())

    # Imported here, after jax.distributed.initialize (which must precede any use of a JAX backend).
    from jsplade.training.config import TrainConfig
    from jsplade.training.multihost import PeerFailed
    from jsplade.training.trainer import Trainer, TrainingDivergedError

    try:
        overrides = _parse_set(args.set)
        if args.base_model:
            overrides["base_model"] = args.base_model
        if args.output_dir:
            overrides["output_dir"] = args.output_dir
        config = TrainConfig.from_file(args.config, overrides)
        trainer = Trainer(config)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"jsplade-train: error: {exc}", file=sys.stderr)
        return 2
    try:
        result = trainer.fit()
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"jsplade-train: error: {exc}", file=sys.stderr)
        return 2
    except (TrainingDivergedError, PeerFailed) as exc:
        print(f"jsplade-train: error: {exc}", file=sys.stderr)
        return 1
    last = result.history[-1] if result.history else {}
    print(f"trained {result.steps} steps; final loss {last.get('total', float('nan')):.6g}; "
          f"run directory {result.output_dir}; model {result.export_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
