#!/bin/bash
# The one command run on a lent GPU machine (see BENCHMARKS.md, "GPU"): environment, then bench/gpu_bench.py.
# Usage: bash bench/gpu_run.sh OUT_DIR [BUDGET_SECONDS] [extra gpu_bench.py arguments...]
set -u
cd "$(dirname "$0")/.."
out=${1:?output directory}; budget=${2:-420}; shift 2 || shift $#
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
python3 - <<'PY'
import importlib
for m in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "torch", "transformers", "sentence_transformers", "numpy"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as exc:
        print(m, "MISSING", exc)
import jax; print(jax.devices())
PY
sanity='import sys; sys.path.insert(0, "."); import jax.numpy as jnp; from jsplade.backbones.gte_config import GteConfig; from jsplade.backbones.gte import GteForMaskedLM; from flax import nnx; m = GteForMaskedLM(GteConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64), rngs=nnx.Rngs(0)); print("jsplade sanity", m(jnp.ones((1, 8), jnp.int32)).shape)'
if ! python3 -c "$sanity"; then
  echo "jsplade does not run with this flax: installing the carried flax wheel"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/flax-*.whl && export PYTHONPATH=/tmp/site
  python3 -c "$sanity" || exit 3
fi
# sentence-transformers loads the benchmark model through transformers' native `gte` (transformers >= 5.2x)
if ! python3 -c "import transformers.models.gte.modeling_gte" 2>/dev/null; then
  echo "this transformers has no native gte: installing the carried transformers wheel"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-tf .whl/transformers-*.whl \
    && export PYTHONPATH=/tmp/site-tf${PYTHONPATH:+:$PYTHONPATH}
  python3 -c "import transformers, transformers.models.gte.modeling_gte; print('transformers', transformers.__version__)" || exit 4
fi
python3 bench/gpu_bench.py --out "$out" --budget-s "$budget" "$@"
