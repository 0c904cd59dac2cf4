"""Sensitivity from cached block inputs (amq.prefix) gives the numbers of full forwards."""

from __future__ import annotations

import pytest
import torch

from amq.config import ModelConfig, ProxyConfig
from amq.metrics import DivergenceEvaluator
from amq.models import layer_blocks, load_model, searchable_linears
from amq.quant.bank import FULL, ProxyBank
from amq.search.sensitivity import measure_sensitivity


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_sensitivity_from_cached_block_inputs_equals_full_forwards(family, small_model_dir, small_qwen2_dir):
    path = small_model_dir if family == "llama" else small_qwen2_dir
    model = load_model(ModelConfig(path=str(path), dtype="float32", device="cpu"), str(path))
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (6, 32))
    evaluator = DivergenceEvaluator(model, ids, batch_size=4)
    bank = ProxyBank(searchable_linears(model), [2, 4], 64, ProxyConfig(iters=3), show_progress=False)
    names = bank.names
    blocks = layer_blocks(model, names)
    assert blocks == sorted(blocks) and blocks[-1] == model.config.num_hidden_layers - 1
    full = measure_sensitivity(names, [2, 4], bank.apply, evaluator.score, show_progress=False)
    cached = measure_sensitivity(names, [2, 4], bank.apply, evaluator.score, False, None, evaluator.score_from, blocks)
    for n in names:
        for b in (2, 4):
            assert cached[n][b] == pytest.approx(full[n][b], rel=1e-5, abs=1e-9), (n, b)
    assert evaluator.prefix.block == blocks[-1]
    # tied units (measured together) and going back to an earlier block re-capture correctly
    units = [(0, len(names) - 1), *[(i,) for i in range(1, len(names) - 1)]]
    tied_full = measure_sensitivity(names, [2], bank.apply, evaluator.score, False, units)
    tied_cached = measure_sensitivity(names, [2], bank.apply, evaluator.score, False, units, evaluator.score_from, blocks)
    assert all(tied_cached[n][2] == pytest.approx(tied_full[n][2], rel=1e-5, abs=1e-9) for n in names)
    # after the pass the model is whole again: a full score matches the untouched reference
    bank.apply([FULL] * len(names))
    assert evaluator.score() == pytest.approx(0.0, abs=1e-6)
