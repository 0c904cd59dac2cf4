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


def test_shared_input_groups_give_the_same_logits(small_model_dir):
    """q/k/v and gate/up linked into groups: every member is served from its group's one call
    (counted), the logits equal the ungrouped model's, eager and compiled (no graph breaks)."""
    from transformers import AutoModelForCausalLM

    from amq.models import shared_input_groups
    from amq_kernels.linear import SharedInputGroup, group_shared_inputs

    model = AutoModelForCausalLM.from_pretrained(small_model_dir, dtype=torch.float32).eval()
    names = list(searchable_linears(model))
    convert_to_plan(model, {n: (2, 3, 4)[i % 3] for i, n in enumerate(names)}, 128, "rtn")
    ids = torch.randint(0, 1000, (1, 1))  # one row: the decode case
    longer = torch.randint(0, 1000, (1, 5))  # several rows: each layer on its own
    with torch.no_grad():
        want, want_longer = model(ids).logits, model(longer).logits
        groups = shared_input_groups(model)
        n_blocks = model.config.num_hidden_layers
        assert len(groups) == 2 * n_blocks and group_shared_inputs(model, groups) == 2 * n_blocks
        calls = []
        original = SharedInputGroup.outputs
        SharedInputGroup.outputs = lambda self, x: calls.append(1) or original(self, x)
        try:
            got = model(ids).logits
        finally:
            SharedInputGroup.outputs = original
        assert len(calls) == 2 * n_blocks and torch.allclose(got, want, atol=1e-5, rtol=1e-5)
        assert all(m.group.pending is None for m in model.modules() if getattr(m, "group", None))  # nothing held
        explain = torch._dynamo.explain(model)(ids)
        ops = [n.target for g in explain.graphs for n in g.graph.nodes]
        assert explain.graph_break_count == 0
        assert ops.count(torch.ops.amq_kernels.packed_linear_group.default) == 2 * n_blocks
        assert ops.count(torch.ops.amq_kernels.packed_linear.default) == len(names) - 5 * n_blocks
        compiled = torch.compile(model, backend="aot_eager")(ids).logits
        assert torch.allclose(compiled, want, atol=1e-5, rtol=1e-5)
        assert torch.equal(model(longer).logits, want_longer)
