import math

import pytest

from amq.config import AMQConfigError
from amq.cost import build_cost_model, layer_bytes
from amq.models import LayerInfo

LAYERS = [LayerInfo("a", 256, 128), LayerInfo("b", 128, 384)]


def test_layer_bytes_counts_codes_scales_and_zeros():
    # 3-bit 4096x11008 (Llama-2-7B down_proj), group 128: 3/8 byte per weight + 4 bytes per group
    assert layer_bytes(4096, 11008, 3, 128) == 4096 * 11008 * 3 // 8 + 4096 * 86 * 4
    assert layer_bytes(128, 256, 2, 64) == 128 * 256 // 4 + 128 * 4 * 4


def test_plan_bytes_avg_bits_and_budget_roundtrip():
    cost = build_cost_model(LAYERS, [2, 3, 4], 128, total_param_count=sum(x.numel for x in LAYERS) + 1000)
    assert cost.other_bytes == 2000
    plan = [2, 4]
    n = [x.numel for x in LAYERS]
    assert math.isclose(cost.avg_bits(plan), (2 * n[0] + 4 * n[1]) / sum(n))
    # a budget equal to a plan's average bits admits exactly that plan's bytes
    assert cost.budget_to_bytes(cost.avg_bits(plan), "bits") == cost.plan_bytes(plan)
    assert cost.budget_to_bytes(cost.model_gb(plan), "gb") == pytest.approx(cost.plan_bytes(plan), abs=1)


@pytest.mark.parametrize("value,unit", [(1.5, "bits"), (4.5, "bits"), (1e-9, "gb"), (10.0, "gb")])
def test_out_of_range_budget_names_the_range(value, unit):
    cost = build_cost_model(LAYERS, [2, 3, 4], 128, total_param_count=sum(x.numel for x in LAYERS))
    with pytest.raises(AMQConfigError, match="achievable range"):
        cost.check_budget(value, unit)


def test_group_size_must_divide_input_width():
    with pytest.raises(AMQConfigError, match="does not divide the input width 128 of a"):
        build_cost_model(LAYERS, [2, 3, 4], 96, total_param_count=0)
