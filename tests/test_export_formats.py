"""Serving-engine exports: compressed-tensors (read back by transformers) and GPTQ (dynamic bits)."""

from __future__ import annotations

import json

import pytest
import torch

from amq.config import AMQConfigError, QuantizerConfig
from amq.export.compressed_tensors import save_compressed_tensors
from amq.export.gptq import layer_bits_from_gptq_config, load_gptq, pack_dense, save_gptq, unpack_dense
from amq.models import searchable_linears
from amq.quant.apply import quantize_model


def _reference_pack_rows(v: torch.Tensor, bits: int) -> torch.Tensor:
    """Packing spelled out value by value: value j of each 32 at bit j * bits of a 32*bits-bit
    little-endian stream, cut into int32 words (the GPTQ layout, 3-bit included)."""
    rows, cols = v.shape
    out = torch.zeros(rows * bits // 32, cols, dtype=torch.int64)
    for c in range(cols):
        for r0 in range(0, rows, 32):
            stream = 0
            for j in range(32):
                stream |= int(v[r0 + j, c]) << (j * bits)
            for w in range(bits):
                out[r0 // 32 * bits + w, c] = (stream >> (32 * w)) & 0xFFFFFFFF
    return torch.where(out >= 2**31, out - 2**32, out).to(torch.int32)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_dense_packing_matches_the_stream_layout_and_round_trips(bits):
    v = torch.randint(0, 2**bits, (64, 5), generator=torch.Generator().manual_seed(bits))
    packed = pack_dense(v, bits, 0)
    assert packed.shape == (64 * bits // 32, 5) and packed.dtype == torch.int32
    assert torch.equal(packed, _reference_pack_rows(v, bits))
    assert torch.equal(unpack_dense(packed, bits, 0), v)
    assert torch.equal(unpack_dense(pack_dense(v.t(), bits, 1), bits, 1), v.t())


def test_dynamic_bits_config_names_every_layer_that_differs():
    cfg = {"bits": 3, "dynamic": {r"+:^m\.a$": {"bits": 2}, r"+:^m\.c$": {"bits": 4}}}
    assert layer_bits_from_gptq_config(cfg, ["m.a", "m.b", "m.c"]) == {"m.a": 2, "m.b": 3, "m.c": 4}


def _quantized(model_dir, int_zero: bool):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    names = list(searchable_linears(model))
    plan = {n: (2, 3, 4)[i % 3] for i, n in enumerate(names)}
    quantize_model(model, plan, QuantizerConfig(method="rtn", integer_zeros=int_zero), show_progress=False)
    return model, plan


def test_float_zeros_are_refused_with_the_fix(tmp_path, small_model_dir):
    model, _ = _quantized(small_model_dir, int_zero=False)
    with pytest.raises(AMQConfigError, match="integer_zeros=true"):
        save_gptq(model, tmp_path / "g")


def check_engine_exports(model, plan, tmp_path, gptq_format: str = "gptq_v2") -> dict[str, float]:
    """Export both ways, reload, compare logits with the QuantLinear model; returns max |diff|
    relative to the logits' scale."""
    from transformers import AutoModelForCausalLM

    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).logits.float()
    out = {}

    ct_dir = save_compressed_tensors(model, tmp_path / "ct", dtype=torch.float32)
    doc = json.loads((ct_dir / "config.json").read_text())["quantization_config"]
    listed = {}
    for group in doc["config_groups"].values():
        for target in group["targets"]:
            listed[target.removeprefix("re:^").removesuffix("$").replace("\\", "")] = group["weights"]["num_bits"]
    assert listed == plan  # every layer, its own bits
    loaded = AutoModelForCausalLM.from_pretrained(ct_dir, dtype=torch.float32).eval()  # transformers' integration
    with torch.no_grad():
        out["compressed-tensors"] = float((loaded(ids).logits.float() - ref).abs().max() / ref.abs().max())

    g_dir = save_gptq(model, tmp_path / "gptq", dtype=torch.float32, checkpoint_format=gptq_format)
    qcfg = json.loads((g_dir / "quantize_config.json").read_text())
    assert layer_bits_from_gptq_config(qcfg, list(plan)) == plan
    with torch.no_grad():
        out["gptq"] = float((load_gptq(g_dir)(ids).logits.float() - ref).abs().max() / ref.abs().max())
    return out


def test_engine_exports_round_trip_on_a_small_model(tmp_path, small_model_dir):
    model, plan = _quantized(small_model_dir, int_zero=True)
    diffs = check_engine_exports(model, plan, tmp_path)
    assert diffs["compressed-tensors"] < 1e-5 and diffs["gptq"] < 1e-5, diffs


@pytest.mark.shared
def test_engine_exports_round_trip_on_the_reference_model_at_3_bits(tmp_path, shared_dir):
    from transformers import AutoModelForCausalLM

    path = shared_dir / "models" / "amq-llama-17m"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    names = list(searchable_linears(model))
    # 3.0 bits on average: q_proj at 2 and k_proj (same shape here) at 4 in every block, the rest at 3
    plan = {n: 2 if n.endswith("q_proj") else 4 if n.endswith("k_proj") else 3 for n in names}
    quantize_model(model, plan, QuantizerConfig(method="rtn", integer_zeros=True), show_progress=False)
    diffs = check_engine_exports(model, plan, tmp_path)
    assert diffs["compressed-tensors"] < 1e-5 and diffs["gptq"] < 1e-5, diffs
