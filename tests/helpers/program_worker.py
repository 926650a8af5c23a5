"""One process of a multi-process program test: ``jax_num_cpu_devices`` CPU devices, then a jsplade program's
``main`` with the remaining arguments (``--coordinator`` etc. given by the test).

    python program_worker.py N_DEVICES MODULE [ARGS...]     e.g.  4 jsplade.cli.encode MODEL CORPUS OUT

Exits with the program's return code; prints the peak RSS (KiB) last on stdout."""

import importlib
import resource
import sys

import jax

jax.config.update("jax_num_cpu_devices", int(sys.argv[1]))
main = importlib.import_module(sys.argv[2]).main

rc = main(sys.argv[3:])
print(f"peak_rss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
sys.exit(rc)
