"""amq.evaluate end to end (CLI), plan sources, the perplexity protocol, and export round trips."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amq.config import QuantizerConfig
from amq.cost import build_cost_model
from amq.export import load_quantized, payload_bytes, quantized_layers, save_quantized
from amq.models import layer_infos, searchable_linears
from amq.perplexity import perplexity
from amq.plan_document import PLAN_FILE, PlanDocument
from amq.quant.apply import quantize_model

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["logger=none", "eval.seq_len=128", "eval.max_windows=3", "data.num_samples=8", "data.seq_len=64", "eval.tests=[builtin]"]


def _eval(model: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "amq.evaluate", f"model.path={model}", f"hydra.run.dir={run_dir}", *QUICK, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)


def _model(path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


def test_perplexity_follows_the_standard_protocol(small_model_dir):
    model = _model(small_model_dir)
    ids = torch.randint(0, 1000, (3 * 40 + 7,), generator=torch.Generator().manual_seed(0))
    ppl, windows = perplexity(model, ids, seq_len=40, batch_size=2, show_progress=False)
    assert windows == 3  # the trailing 7 tokens are dropped
    with torch.no_grad():
        logits = model(ids[:120].view(3, 40)).logits
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:120].view(3, 40)[:, 1:].reshape(-1))
    assert math.isclose(ppl, math.exp(float(nll)), rel_tol=1e-5)


def test_export_reloads_matches_and_generates(tmp_path, small_model_dir):
    from transformers import AutoTokenizer

    model = _model(small_model_dir)
    names = list(searchable_linears(model))
    plan = {n: (2, 3, 4)[i % 3] for i, n in enumerate(names)}
    calib = torch.randint(0, 1000, (4, 64), generator=torch.Generator().manual_seed(0))
    quantize_model(model, plan, QuantizerConfig(method="gptq"), calib, show_progress=False)
    tok = AutoTokenizer.from_pretrained(small_model_dir)
    out = save_quantized(model, tmp_path / "export", "gptq", tokenizer=tok)  # the 16-bit rest is cast to fp16 in place
    doc = json.loads((out / "quantization.json").read_text())
    assert {n: v["bits"] for n, v in doc["layers"].items()} == plan

    fresh = _model(small_model_dir)
    cost = build_cost_model(layer_infos(fresh), [2, 3, 4], 128, sum(p.numel() for p in fresh.parameters()))
    predicted = cost.model_gb([plan[n] for n in names]) * 1e9
    assert abs(payload_bytes(out / "model.safetensors") / predicted - 1) < 0.01

    loaded = load_quantized(out, dtype=torch.float16)
    ids = torch.randint(0, 1000, (2, 24))
    with torch.no_grad():
        a, b = model(ids).logits.float(), loaded(ids).logits.float()
    assert torch.allclose(a, b, atol=1e-2, rtol=1e-2), float((a - b).abs().max())
    gen = loaded.generate(tok("def", return_tensors="pt").input_ids, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > 1
    # q/k/v and gate/up are linked for one-launch decode; greedy tokens match the unlinked model
    assert sum(m.slot == 0 for m in quantized_layers(loaded).values() if m.group is not None) == 2 * loaded.config.num_hidden_layers
    plain = load_quantized(out, dtype=torch.float16, group_inputs=False)
    assert all(m.group is None for m in quantized_layers(plain).values())
    assert torch.equal(gen, plain.generate(tok("def", return_tensors="pt").input_ids, max_new_tokens=8, do_sample=False))


def test_version_1_export_is_repacked_on_load(tmp_path, small_model_dir):
    """Exports written before the paired code layout (format v1, plain code order in words)
    load into today's layout with the same weights."""
    from safetensors.torch import load_file, save_file

    from amq.export import quantized_layers
    from amq_kernels.packing import pack_planes, unpack_codes

    model = _model(small_model_dir)
    plan = {n: (2, 3, 4)[i % 3] for i, n in enumerate(searchable_linears(model))}
    quantize_model(model, plan, QuantizerConfig(method="rtn"), None, show_progress=False)
    out = save_quantized(model, tmp_path / "v2", "rtn")
    tensors = load_file(out / "model.safetensors")
    for name, q in quantized_layers(model).items():
        for i, plane in enumerate(pack_planes(unpack_codes(q.packed), q.bits, layout=1)):
            assert not torch.equal(plane, tensors[f"{name}.plane{i}"])  # the layouts differ
            tensors[f"{name}.plane{i}"] = plane
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    doc = json.loads((out / "quantization.json").read_text())
    (out / "quantization.json").write_text(json.dumps({**doc, "version": 1}))

    loaded = load_quantized(out)
    for name, q in quantized_layers(loaded).items():
        assert torch.equal(unpack_codes(q.packed), unpack_codes(quantized_layers(model)[name].packed))


def test_load_refuses_a_folder_that_is_not_an_export(tmp_path):
    from amq.config import AMQConfigError

    with pytest.raises(AMQConfigError, match="not an amq export"):
        load_quantized(tmp_path)


@pytest.mark.slow
def test_evaluate_cli_uniform_and_ilp_plans(tmp_path, small_model_dir):
    r = _eval(
        small_model_dir,
        tmp_path / "u",
        "quantizer=gptq",
        "quantizer.integer_zeros=true",
        "plan.bits=3",
        "export=true",
        "export_formats=[amq,compressed-tensors,gptq_v2]",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "u" / "result.json").read_text())
    assert res["method"] == "gptq" and res["avg_bits"] == 3.0 and res["perplexity"]["builtin"]["windows"] == 3
    assert res["perplexity"]["builtin"]["seq_len"] == 128 and res["perplexity"]["builtin"]["ppl"] > 1
    assert (tmp_path / "u" / "export" / "model.safetensors").is_file()
    assert (tmp_path / "u" / "export-compressed-tensors" / "config.json").is_file()
    assert (tmp_path / "u" / "export-gptq_v2" / "quantize_config.json").is_file()
    for export in ("export", "export-compressed-tensors", "export-gptq_v2"):  # every export carries the plan it was made to
        assert PlanDocument.load(tmp_path / "u" / export / PLAN_FILE) == PlanDocument.from_json(res["plan"], "result.json")
    vs = res["vs_16bit"]  # the comparison users make, with its context stated
    assert vs["seq_len"] == 128 and vs["windows"] == 3 and vs["test"] == "builtin"
    assert 0 < vs["jsd"] < vs["kl"] and 0.5 < vs["same_top_token"] < 1

    # a per-layer table as a search writes it; the ILP plan must fit the budget exactly
    names = [lay.name for lay in layer_infos(_model(small_model_dir))]
    table = {n: {"2": 0.1 + 0.01 * i, "3": 0.02, "4": 0.005} for i, n in enumerate(names)}
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "sensitivity.json").write_text(json.dumps({"per_bits": table}))
    r = _eval(small_model_dir, tmp_path / "i", "quantizer=hqq", "plan=ilp", f"plan.path={tmp_path / 'search'}", "plan.budget=2.75")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "i" / "result.json").read_text())
    assert 2.5 < res["avg_bits"] <= 2.75 + 1e-9
    assert res["plan"]["layers"][names[0]] == 2  # the least sensitive layer takes the lowest bits


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan=file", "plan.path=/no/such/plan.json"], "no such plan file"),
        (["plan=ilp", "plan.path=/no/such/run", "plan.budget=3"], "no sensitivity.json"),
        (["quantizer.method=nope"], "quantizer.method must be one of"),
        (["export=true", "export_formats=[gptq]"], "quantizer.integer_zeros=true"),
        (["export_formats=[onnx]"], "export_formats: unknown"),
        (["eval.tests=[/no/such/test.txt]"], "is not wikitext2, c4, builtin or an existing text file"),
    ],
)
def test_evaluate_cli_bad_input_is_one_line(tmp_path, small_model_dir, args, message):
    r = _eval(small_model_dir, tmp_path / "run", *args)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().startswith("error:") and message in r.stderr and "Traceback" not in r.stderr


def test_a_searched_plan_is_repaired_to_a_new_budget(tmp_path):
    from amq.config import PlanConfig
    from amq.models import LayerInfo
    from amq.plan_sources import build_plan

    layers = [LayerInfo(f"model.layers.0.l{i}", 128, 128 * (1 + i % 2)) for i in range(6)]
    cost = build_cost_model(layers, [2, 3, 4], 128, sum(lay.numel for lay in layers) + 1000)
    names = [lay.name for lay in layers]
    run = tmp_path / "run"
    (run / "plans").mkdir(parents=True)
    (run / "sensitivity.json").write_text(
        json.dumps({"per_bits": {n: {"2": 0.1 * (i + 1), "3": 0.01, "4": 0.001} for i, n in enumerate(names)}})
    )
    start = dict(zip(names, [4, 4, 3, 3, 4, 4], strict=True))
    bits = list(start.values())
    doc = PlanDocument(
        model="m", layers=start, group_size=128, choices=[2, 3, 4], source="search",
        avg_bits=cost.avg_bits(bits), bytes=cost.plan_bytes(bits), model_gb=cost.model_gb(bits),
    )  # fmt: skip
    doc.save(run / "plans" / "3.5bits.json")
    plan = build_plan(PlanConfig(source="file", path=str(run / "plans" / "3.5bits.json"), budget=3.0), names, cost)
    assert cost.avg_bits([plan[n] for n in names]) <= 3.0 + 1e-9
    assert all(abs(plan[n] - start[n]) <= 1 for n in names)
