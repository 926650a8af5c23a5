#!/usr/bin/env bash
# Start jsplade training on every worker of a Cloud TPU slice (v5p-*, v6e-*).
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a ./train/launch_tpu_pod.sh train/configs/v3gte_pod.toml [--set key=value ...]
#
# Every worker runs the same program; jax.distributed.initialize() discovers the slice by itself. The repository
# must be at ~/jsplade on every worker and output_dir (set in the config) on a filesystem all workers mount (NFS, Filestore, gcsfuse).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
CONFIG=${1:?usage: launch_tpu_pod.sh CONFIG.toml [jsplade-train options]}
shift
ARGS=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  set -e
  cd ~/jsplade
  [ -d .venv ] || (python3 -m venv .venv && .venv/bin/pip install -q -e . 'jax[tpu]')
  .venv/bin/python train/train.py $CONFIG --distributed $ARGS
"
