"""The final choice: candidates per budget, and scoring after the real quantizer."""

from __future__ import annotations

import pytest
import torch

from amq.config import DataConfig, ModelConfig, QuantizerConfig
from amq.data import calibration_ids
from amq.models import load_model, load_tokenizer, searchable_linears
from amq.search.archive import Record
from amq.search.final import BudgetChoice, Candidate, FinalScorer, budget_candidates, choose


def _rec(plan, div, source="nsga2"):
    return Record(tuple(plan), div, sum(plan), sum(plan) / len(plan), 1, source, 0, 0.0)


def test_candidates_are_the_top_k_that_fit_then_the_peers_once_each():
    records = [_rec((2, 2), 0.5), _rec((3, 2), 0.2), _rec((2, 3), 0.3), _rec((3, 3), 0.1), _rec((4, 4), 0.01)]
    peers = {"ilp": (3, 2), "greedy": (2, 2), "uniform-4": (4, 4)}
    proxy_calls = []
    cands = budget_candidates(5, records, peers, 2, sum, lambda p: sum(p) / 2, lambda p: proxy_calls.append(p) or 9.0)
    assert [c.plan for c in cands] == [(3, 2), (2, 3), (2, 2)]  # (3, 3) and (4, 4) do not fit 5 bytes
    assert cands[0].sources == ["search:nsga2", "ilp"]
    assert cands[2].sources == ["greedy"] and cands[2].proxy == 0.5  # known from the archive: not scored again
    assert proxy_calls == []
    cands = budget_candidates(5, records, {"ilp": (1, 4)}, 1, sum, lambda p: sum(p) / 2, lambda p: 9.0)
    assert [(c.plan, c.proxy) for c in cands] == [((3, 2), 0.2), ((1, 4), 9.0)]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_final_scorer_ranks_after_gptq_and_puts_the_weights_back(family, request):
    model_dir = request.getfixturevalue("small_model_dir" if family == "llama" else "small_qwen2_dir")
    model = load_model(ModelConfig(name="s", path=str(model_dir), device="cpu"), str(model_dir))
    tok = load_tokenizer(str(model_dir))
    data = DataConfig(num_samples=4, seq_len=64)
    calib = calibration_ids(data, tok)
    held_out = calibration_ids(DataConfig(num_samples=4, seq_len=64, seed=1), tok)
    assert not torch.equal(calib, held_out)
    linears = searchable_linears(model)
    before = {n: lin.weight.detach().clone() for n, lin in linears.items()}
    names = list(linears)
    scorer = FinalScorer(model, linears, calib, held_out, QuantizerConfig(method="gptq", batch_size=4), "jsd")
    two, four = (2,) * len(names), (4,) * len(names)
    mixed = (4,) * (len(names) // 2) + (2,) * (len(names) - len(names) // 2)
    choices = [BudgetChoice(3.0, 0, []), BudgetChoice(4.0, 0, [])]
    choices[0].candidates = [Candidate(two, ["uniform-2"], 2, 2.0, 0.5), Candidate(mixed, ["search:x"], 3, 3.0, 0.2)]
    choices[1].candidates = [Candidate(mixed, ["search:x"], 3, 3.0, 0.2), Candidate(four, ["uniform-4"], 4, 4.0, 0.01)]
    choose(choices, names, scorer, show_progress=False)
    assert [c.sources for c in choices[0].candidates] == [["search:x"], ["uniform-2"]]
    assert choices[1].best.plan == four
    assert 0 < choices[1].best.final < choices[0].best.final < choices[0].candidates[1].final
    assert choices[0].candidates[0].final == choices[1].candidates[1].final  # one plan, scored once
    for n, lin in linears.items():
        assert torch.equal(lin.weight, before[n]), n
    # the reference is the full-precision model: with its weights back it scores 0
    assert scorer.evaluator.score() < 1e-6


def test_gptq_of_siblings_together_gives_the_codes_of_each_alone(small_qwen2_dir):
    """q/k/v (k and v narrower under grouped-query attention) and gate/up share one GPTQ pass,
    each at its own bits: the codes are those of quantizing each layer on its own."""
    from amq.models import decoder_blocks, shared_input_groups
    from amq.quant.apply import _hessians, capture_block_inputs
    from amq.quant.gptq import gptq_quantize, gptq_quantize_shared

    model = load_model(ModelConfig(name="s", path=str(small_qwen2_dir), device="cpu"), str(small_qwen2_dir))
    tok = load_tokenizer(str(small_qwen2_dir))
    ids = calibration_ids(DataConfig(num_samples=4, seq_len=64), tok)
    block = decoder_blocks(model)[0]
    mine = {n: lin for n, lin in searchable_linears(model).items() if n.startswith("model.layers.0.")}
    inputs = capture_block_inputs(model, ids, 4)
    groups = [g for g in shared_input_groups(model) if g[0] in mine]
    assert sorted(len(g) for g in groups) == [2, 3]  # gate/up, q/k/v
    qkv = next(g for g in groups if len(g) == 3)
    assert [n.rsplit(".", 1)[1] for n in qkv] == ["q_proj", "k_proj", "v_proj"]
    assert mine[qkv[1]].out_features < mine[qkv[0]].out_features  # grouped-query attention
    h = _hessians(block, {qkv[0]: mine[qkv[0]]}, inputs)[qkv[0]]
    together = gptq_quantize_shared([mine[n].weight.data for n in qkv], h, [2, 4, 3], 128)
    for n, b, gq in zip(qkv, [2, 4, 3], together, strict=True):
        alone = gptq_quantize(mine[n].weight.data, h, b, 128)
        assert gq.bits == b and int(gq.codes.max()) <= 2**b - 1
        assert torch.equal(gq.codes, alone.codes) and torch.equal(gq.scale, alone.scale), n
