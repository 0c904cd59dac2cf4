"""amq's mixed-bit weight-only kernels. Imports with torch alone; Triton is loaded on first use.

The folder is `kernels/` but the package is `amq_kernels`: a top-level `kernels` would shadow
Hugging Face's `kernels` package, which transformers probes for.
"""

from amq_kernels.packing import PackedWeight, dequantize, pack, plane_widths, unpack_codes

__all__ = ["PackedWeight", "dequantize", "pack", "plane_widths", "unpack_codes"]
