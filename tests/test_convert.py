import json

import torch

from amq.config import ProxyConfig
from amq.models import searchable_linears
from amq.quant.bank import ProxyBank
from amq.quant.convert import convert_to_plan
from amq_kernels.linear import QuantLinear


def test_converted_model_matches_the_proxy_bank_on_cpu(small_model_dir):
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(small_model_dir, dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(small_model_dir, dtype=torch.float32).eval()
    names = list(searchable_linears(a))
    plan = {n: (2, 3, 4)[i % 3] for i, n in enumerate(names)}
    bank = ProxyBank(searchable_linears(a), [2, 3, 4], 128, ProxyConfig(iters=5), show_progress=False)
    bank.apply([plan[n] for n in names])
    convert_to_plan(b, plan, 128, "hqq", iters=5)
    assert sum(isinstance(m, QuantLinear) for m in b.modules()) == len(names)
    ids = torch.randint(0, 1000, (2, 32))
    with torch.no_grad():
        la, lb = a(ids).logits, b(ids).logits
    assert torch.allclose(la, lb, atol=1e-4, rtol=1e-4)
    json.dumps(plan)  # plans are plain JSON


def test_converted_model_compiles_without_graph_breaks(small_model_dir):
    """torch.compile sees each QuantLinear as one opaque op (amq_kernels::packed_linear): one
    graph, no breaks, and the same logits as eager."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(small_model_dir, dtype=torch.float32).eval()
    names = list(searchable_linears(model))
    convert_to_plan(model, {n: (2, 3, 4)[i % 3] for i, n in enumerate(names)}, 128, "rtn")
    ids = torch.randint(0, 1000, (1, 16))
    with torch.no_grad():
        want = model(ids).logits
        explain = torch._dynamo.explain(model)(ids)
        ops = [n for g in explain.graphs for n in g.graph.nodes if n.target is torch.ops.amq_kernels.packed_linear.default]
        got = torch.compile(model, backend="aot_eager")(ids).logits
    assert explain.graph_break_count == 0 and len(ops) == len(names)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
