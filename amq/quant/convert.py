"""Turn a HF model into one that runs a plan with a data-free quantizer (the search's proxy):
each planned layer becomes a QuantLinear. For GPTQ/AWQ see `amq.quant.apply.quantize_model`."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from amq.models import searchable_linears
from amq.quant.apply import replace_with_quant_linears
from amq.quant.groupwise import quantize


def convert_to_plan(model: nn.Module, plan: Mapping[str, int], group_size: int, method: str = "hqq", **kwargs: float) -> nn.Module:
    """Quantize every layer named in `plan` at its bits (data-free `method`) and swap in QuantLinear."""
    linears = searchable_linears(model)
    missing = set(plan) - set(linears)
    if missing:
        raise ValueError(f"plan names layers the model does not have: {sorted(missing)[:3]}")
    quants = {name: quantize(linears[name].weight.data, int(bits), group_size, method, hqq=kwargs) for name, bits in plan.items()}
    return replace_with_quant_linears(model, quants)
