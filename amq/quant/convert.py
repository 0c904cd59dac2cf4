"""Turn a HF model into one that runs a plan: each searchable layer becomes a QuantLinear."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from amq.models import searchable_linears
from amq.quant.groupwise import quantize
from amq_kernels.linear import QuantLinear
from amq_kernels.packing import pack


def convert_to_plan(model: nn.Module, plan: Mapping[str, int], group_size: int, method: str = "hqq", **kwargs: float) -> nn.Module:
    """Quantize every layer named in `plan` at its bits (data-free `method`) and swap in QuantLinear."""
    linears = searchable_linears(model)
    missing = set(plan) - set(linears)
    if missing:
        raise ValueError(f"plan names layers the model does not have: {sorted(missing)[:3]}")
    for name, bits in plan.items():
        lin = linears[name]
        q = quantize(lin.weight.data, int(bits), group_size, method, **kwargs)
        ql = QuantLinear(pack(q.codes, q.scale, q.zero, int(bits), group_size), lin.bias.data if lin.bias is not None else None)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, ql.to(lin.weight.device))
    return model
