"""amq: mixed-precision weight quantization search (AMQ) and its kernels."""

import os as _os

# CPU runs: OpenMP threads that spin while waiting made two runs sharing two cores 6x slower each
# (535 s vs 84 s, benchmarks/e2e/results/default_run.md); passive waiting costs nothing alone. Set before torch
# loads its OpenMP runtime; a value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
