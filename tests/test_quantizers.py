"""GPTQ, AWQ, HQQ applied to a layer and to a whole small Llama; AWQ's scale folding."""

from __future__ import annotations

import pytest
import torch

from amq.config import QuantizerConfig
from amq.models import decoder_blocks, searchable_linears
from amq.quant.apply import _awq_groups, _fold_scale, capture_block_inputs, quantize_model
from amq.quant.awq import clip_weight, search_scale
from amq.quant.gptq import HessianAccumulator, gptq_quantize
from amq.quant.groupwise import quantize_rtn
from amq_kernels.linear import QuantLinear


def _correlated_inputs(n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 32, generator=g) @ torch.randn(32, k, generator=g) + 0.1 * torch.randn(n, k, generator=g)


def test_hessian_accumulator_matches_the_batch_formula():
    x = _correlated_inputs(700, 64)
    acc = HessianAccumulator(64, x.device)
    for chunk in x.split(150):
        acc.add(chunk)
    assert torch.allclose(acc.h, 2 * x.T @ x / len(x), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_output_error_is_below_rtn(bits, act_order):
    x = _correlated_inputs(1024, 256)
    w = torch.randn(96, 256, generator=torch.Generator().manual_seed(1)) * 0.05
    acc = HessianAccumulator(256, x.device)
    acc.add(x)
    gq = gptq_quantize(w, acc.h, bits, 64, act_order=act_order)
    assert gq.codes.max() < 2**bits and gq.scale.dtype == torch.float16

    def err(q):
        return float(((x @ q.T - x @ w.T) ** 2).mean())

    assert err(gq.dequantize(torch.float32)) < 0.5 * err(quantize_rtn(w, bits, 64).dequantize(torch.float32))


def test_awq_scale_and_clip_lower_the_output_error_on_salient_channels():
    x = _correlated_inputs(512, 256)
    x[:, :4] *= 30  # a few salient channels, as in real activations
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(2)) * 0.05
    ref = x @ w.T
    rtn = float(((x @ quantize_rtn(w, 3, 64).dequantize(torch.float32).T - ref) ** 2).mean())
    s = search_scale(x, [(w, 3)], 64)
    w_awq = quantize_rtn(clip_weight(w * s, x / s, 3, 64), 3, 64).dequantize(torch.float32) / s
    awq = float(((x @ w_awq.T - ref) ** 2).mean())
    assert awq < rtn


def _model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def test_awq_folding_keeps_the_float_block_unchanged(small_model_dir):
    model = _model(small_model_dir)
    ids = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(ids).logits
        block = decoder_blocks(model)[0]
        names = set(searchable_linears(model))
        for op, group in _awq_groups(block, "model.layers.0", names):
            s = torch.rand(model.get_submodule(group[0]).in_features) + 0.5
            _fold_scale(op, [model.get_submodule(n) for n in group], s)
        after = model(ids).logits
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)


def test_block_inputs_are_captured_per_batch(small_model_dir):
    model = _model(small_model_dir)
    ids = torch.randint(0, 1000, (5, 16))
    seen = capture_block_inputs(model, ids, batch_size=2)
    assert len(seen) == 3
    args, kwargs = seen[0]
    hidden = args[0] if args else kwargs["hidden_states"]
    assert hidden.shape == (2, 16, model.config.hidden_size)


@pytest.mark.parametrize("method", ["gptq", "awq", "hqq", "rtn"])
def test_quantized_model_stays_close_to_16_bit(small_model_dir, method):
    ref_model, model = _model(small_model_dir), _model(small_model_dir)
    g = torch.Generator().manual_seed(0)
    calib = torch.randint(0, 1000, (8, 64), generator=g)
    ids = torch.randint(0, 1000, (2, 32), generator=g)
    plan = {n: 4 for n in searchable_linears(model)}
    quants = quantize_model(model, plan, QuantizerConfig(method=method), calib, show_progress=False)
    assert set(quants) == set(plan)
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == len(plan)
    with torch.no_grad():
        ref, out = ref_model(ids).logits, model(ids).logits
    assert torch.isfinite(out).all()
    rel = float((out - ref).norm() / ref.norm())
    assert rel < 0.1, rel


def test_gptq_beats_rtn_on_the_model_at_3_bits(small_model_dir):
    ref_model = _model(small_model_dir)
    g = torch.Generator().manual_seed(0)
    calib = torch.randint(0, 1000, (16, 64), generator=g)
    with torch.no_grad():
        ref = ref_model(calib).logits
    errs = {}
    for method in ("gptq", "rtn"):
        model = _model(small_model_dir)
        quantize_model(model, {n: 3 for n in searchable_linears(model)}, QuantizerConfig(method=method), calib, False, pack_layers=False)
        with torch.no_grad():
            errs[method] = float((model(calib).logits - ref).norm())
    assert errs["gptq"] < errs["rtn"], errs


@pytest.mark.parametrize("method", ["rtn", "hqq", "gptq"])
def test_integer_zeros_are_integer_codes_and_stay_close(method):
    from amq.quant.gptq import gptq_quantize
    from amq.quant.groupwise import quantize

    g = torch.Generator().manual_seed(3)
    w = torch.randn(64, 256, generator=g)
    x = torch.randn(512, 256, generator=g)
    for bits in (2, 3, 4):
        if method == "gptq":
            fz = gptq_quantize(w, x.t() @ x, bits, 128)
            iz = gptq_quantize(w, x.t() @ x, bits, 128, int_zero=True)
        else:
            fz, iz = quantize(w, bits, 128, method), quantize(w, bits, 128, method, int_zero=True)
        z = iz.zero.float()
        assert torch.equal(z, z.round()) and z.min() >= 0 and z.max() <= 2**bits - 1
        err_f = (fz.dequantize(torch.float32) - w).pow(2).mean()
        err_i = (iz.dequantize(torch.float32) - w).pow(2).mean()
        assert err_i < 1.6 * err_f  # rounding the zero costs little


@pytest.mark.parametrize("method", ["rtn", "hqq", "gptq"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_a_constant_group_quantizes_to_finite_weights(method, bits):
    """An all-zero group (a pruned row, or input columns GPTQ finds dead) or a constant one: its fp16
    scale used to round to 0 and its weights to NaN. Now finite and close to the constant."""
    from amq.quant.groupwise import quantize

    torch.manual_seed(0)
    w = torch.randn(4, 256) * 0.02
    w[0, :128] = 0.0
    w[1, 128:] = 0.3
    w[2, :128] = -1e-9
    if method == "gptq":
        x = torch.randn(512, 256)
        x[:, 128:] = 0.0  # dead inputs: GPTQ zeroes the whole second group of every row
        gq = gptq_quantize(w, x.t() @ x, bits, 128)
    else:
        gq = quantize(w, bits, 128, method)
    d = gq.dequantize(torch.float32)
    assert torch.isfinite(d).all()
    assert d[0, :128].abs().max() < 1e-6 and d[2, :128].abs().max() < 1e-6
    if method != "gptq":
        assert (d[1, 128:] - 0.3).abs().max() < 1e-3
