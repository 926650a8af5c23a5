#!/usr/bin/env bash
# Start jsplade training on N GPU hosts (one process per host, all its GPUs).
#
# Run on every host, same arguments except HOST_INDEX:
#   COORDINATOR=10.0.0.1:9876 NUM_HOSTS=4 HOST_INDEX=0 ./train/launch_gpu_multihost.sh train/configs/v3gte_pod.toml
# Under SLURM, `srun --ntasks-per-node=1 .venv/bin/python train/train.py CONFIG --distributed` is enough
# (jax.distributed.initialize() reads the SLURM environment).
set -euo pipefail
: "${COORDINATOR:?host:port of host 0}" "${NUM_HOSTS:?number of hosts}" "${HOST_INDEX:?index of this host}"
CONFIG=${1:?usage: launch_gpu_multihost.sh CONFIG.toml [jsplade-train options]}
shift
cd "$(dirname "$0")/.."
[ -d .venv ] || (python3 -m venv .venv && .venv/bin/pip install -q -e . 'jax[cuda12]')
exec .venv/bin/python train/train.py "$CONFIG" --coordinator "$COORDINATOR" --num-processes "$NUM_HOSTS" \
  --process-id "$HOST_INDEX" "$@"
