"""`python -m amq.evaluate`: apply a plan with a real quantizer, measure perplexity, export.

Writes `result.json` into the run dir (method, plan source, bits, bytes, perplexity per test
set with its context length and window count) and, with `export=true`, a packed checkpoint
under `export/`. `python -m amq.report <dir>` turns many of these into one comparison.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from amq.config import AMQConfigError, DataConfig, EvaluateConfig, register_configs
from amq.cost import CostModel, build_cost_model
from amq.data import calibration_ids, check_data, load_text
from amq.metrics import compare_to_reference
from amq.models import load_config, load_model, load_tokenizer, model_fingerprint, resolve_model_path, shapes_from_config
from amq.perplexity import perplexity, token_stream
from amq.plan_document import PLAN_FILE, PlanDocument
from amq.plan_sources import build_plan
from amq.tracking import Tracker

log = logging.getLogger(__name__)
register_configs()


def test_name(source: str) -> str:
    """How a test text is named in results: the dataset name, or <folder>/<stem> of a file."""
    if source in ("wikitext2", "c4", "builtin"):
        return source
    p = Path(source)
    return f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem


def test_text(source: str) -> str:
    """A test split by name (wikitext2, c4 from the hub; builtin: the embedded held-out text) or a local file."""
    if source == "builtin":
        from amq.tiny import builtin_corpus

        return builtin_corpus()[1]
    if source in ("wikitext2", "c4"):
        return load_text(DataConfig(name=source), split="test" if source == "wikitext2" else "validation")
    return Path(source).expanduser().read_text(encoding="utf-8", errors="replace")  # checked in evaluate()


@dataclass
class _Checked:
    """What the cheap checks found: the model's path and shapes, the plan, what needs data, the exports."""

    path: str
    fingerprint: str
    layers: list
    total: int
    cost: CostModel
    choices: list[int]
    plan: dict[str, int]
    needs_data: bool
    engine_formats: list[str]


def evaluate(cfg: EvaluateConfig, run_dir: Path, show_progress: bool = True) -> dict:
    """Quantize `cfg.model` to `cfg.plan` with `cfg.quantizer`; return (and save) the results."""
    from amq.quant.apply import quantize_model

    run_dir.mkdir(parents=True, exist_ok=True)
    ok = _check(cfg)  # cheap checks first: paths, plan, budget, test files, exports
    torch.manual_seed(cfg.seed)
    model = load_model(cfg.model, ok.path)
    tokenizer = load_tokenizer(ok.path, cfg.model.trust_remote_code)
    result: dict = {
        "model": cfg.model.name,
        "method": cfg.quantizer.method if ok.plan else "fp16",
        "plan_source": cfg.plan.source,
        "budget": cfg.plan.budget,
        "group_size": cfg.quantizer.group_size,
        "plan": None,
    }
    reference = copy.deepcopy(model) if ok.plan and cfg.eval.vs_16bit_windows else None  # the 16-bit model to compare with
    doc = None
    if ok.plan:
        bits = [ok.plan[lay.name] for lay in ok.layers]
        result.update(avg_bits=ok.cost.avg_bits(bits), bytes=ok.cost.plan_bytes(bits), model_gb=ok.cost.model_gb(bits))
        doc = PlanDocument(
            model=ok.path,
            model_fingerprint=ok.fingerprint,
            layers=ok.plan,
            group_size=cfg.quantizer.group_size,
            choices=ok.choices,
            source=cfg.plan.source,
            avg_bits=result["avg_bits"],
            bytes=result["bytes"],
            model_gb=result["model_gb"],
        )
        result["plan"] = doc.to_json()
        t0 = time.perf_counter()
        ids = calibration_ids(cfg.data, tokenizer) if ok.needs_data else None
        quantize_model(model, ok.plan, cfg.quantizer, ids, show_progress, pack_layers=cfg.export)
        result["quantize_s"] = time.perf_counter() - t0
    else:
        result.update(avg_bits=16.0, bytes=2 * sum(lay.numel for lay in ok.layers), model_gb=2 * ok.total / 1e9)

    result.update(_perplexities(cfg, model, reference, tokenizer, show_progress))
    del reference
    if cfg.eval.zero_shot:
        from amq.zeroshot import zero_shot

        result["zero_shot"] = zero_shot(
            model, tokenizer, cfg.eval.zero_shot, cfg.eval.batch_size, cfg.eval.zero_shot_limit, cfg.eval.tasks_path
        )
        log.info("zero-shot (0-shot, lm-eval): %s", result["zero_shot"])
    if cfg.export and doc is not None:  # (export=true without a plan was refused by the checks)
        result.update(_export(cfg, run_dir, model, tokenizer, doc, round(result["model_gb"] * 1e9), ok.engine_formats))

    (run_dir / "result.json").write_text(json.dumps(result, indent=1))
    tracker = Tracker(cfg.logger, run_dir, {k: v for k, v in asdict(cfg).items() if k != "plan"}, cfg.run_name)
    summary = {"avg_bits": result["avg_bits"], **{f"ppl/{k}": v["ppl"] for k, v in result["perplexity"].items()}}
    summary.update({f"vs_16bit/{k}": v for k, v in result.get("vs_16bit", {}).items() if isinstance(v, float)})
    tracker.summary(summary)
    tracker.finish()
    return result


def _check(cfg: EvaluateConfig) -> _Checked:
    """Everything checkable without weights: the model's config, the plan, data, test files, exports."""
    path = resolve_model_path(cfg.model.path)
    hf_config = load_config(path, cfg.model.trust_remote_code)
    layers, total = shapes_from_config(hf_config, cfg.model.trust_remote_code)
    choices = sorted({*cfg.plan.choices, cfg.plan.bits})
    cost = build_cost_model(layers, choices, cfg.quantizer.group_size, total)
    fingerprint = model_fingerprint(hf_config)
    plan = build_plan(cfg.plan, [lay.name for lay in layers], cost, fingerprint)
    needs_data = bool(plan) and cfg.quantizer.method in ("gptq", "awq")
    if needs_data:
        check_data(cfg.data)
    if not cfg.eval.tests:
        raise AMQConfigError("eval.tests is empty: name at least one test text (wikitext2, c4, builtin or a file)")
    for source in cfg.eval.tests:
        if source in ("wikitext2", "c4"):
            check_data(DataConfig(name=source))
        elif source != "builtin" and not Path(source).expanduser().is_file():
            raise AMQConfigError(f"eval.tests: {source!r} is not wikitext2, c4, builtin or an existing text file")
    if cfg.export and not plan:
        raise AMQConfigError("export=true needs a quantized plan (plan.source is none)")
    engine_formats = [f for f in cfg.export_formats if f != "amq"] if cfg.export else []
    if engine_formats and not cfg.quantizer.integer_zeros:
        raise AMQConfigError(f"export_formats {engine_formats} store integer zero-points: add quantizer.integer_zeros=true")
    if "compressed-tensors" in engine_formats and importlib.util.find_spec("compressed_tensors") is None:
        raise AMQConfigError("export_formats compressed-tensors needs the compressed-tensors package: pip install 'amq[export]'")
    return _Checked(path, fingerprint, layers, total, cost, choices, plan, needs_data, engine_formats)


def _perplexities(cfg: EvaluateConfig, model, reference, tokenizer, show_progress: bool) -> dict:
    """Perplexity on every test text; on the first, the distance from the 16-bit `reference` too."""
    out: dict = {"perplexity": {}}
    for k, source in enumerate(cfg.eval.tests):
        name = test_name(source)
        ids = token_stream(test_text(source), tokenizer)
        ppl, windows = perplexity(model, ids, cfg.eval.seq_len, cfg.eval.batch_size, cfg.eval.max_windows, f"ppl {name}", show_progress)
        out["perplexity"][name] = {"ppl": ppl, "seq_len": cfg.eval.seq_len, "windows": windows, "tokens": int(ids.numel())}
        log.info("%s: perplexity %.3f (%d windows of %d tokens)", name, ppl, windows, cfg.eval.seq_len)
        if k == 0 and reference is not None:
            n = min(windows, cfg.eval.vs_16bit_windows)
            w = ids[: n * cfg.eval.seq_len].view(n, cfg.eval.seq_len)
            vs = compare_to_reference(model, reference, w, cfg.eval.batch_size)
            out["vs_16bit"] = {**vs, "test": name, "seq_len": cfg.eval.seq_len, "windows": n}
            log.info(
                "vs 16-bit on %s (%d windows of %d tokens): KL %.5f, JSD %.5f, same top token %.2f%%",
                name, n, cfg.eval.seq_len, vs["kl"], vs["jsd"], 100 * vs["same_top_token"],
            )  # fmt: skip
    return out


def _export(cfg: EvaluateConfig, run_dir: Path, model, tokenizer, doc: PlanDocument, predicted: int, engine_formats: list[str]) -> dict:
    """The packed checkpoint(s), each with the plan document beside its weights."""
    from amq.export import payload_bytes, save_quantized

    out: dict = {}
    dtype = torch.bfloat16 if cfg.model.dtype == "bfloat16" else torch.float16
    if "amq" in cfg.export_formats:
        target = save_quantized(model, run_dir / "export", cfg.quantizer.method, {"avg_bits": doc.avg_bits}, tokenizer, dtype)
        doc.save(target / PLAN_FILE)
        size, payload = (target / "model.safetensors").stat().st_size, payload_bytes(target / "model.safetensors")
        out["export"] = {"dir": str(target), "file_bytes": size, "tensor_bytes": payload, "cost_model_bytes": predicted}
        out["export"]["size_ratio"] = size / predicted
        log.info("export: %d bytes on disk (%d of tensors) vs %d by the cost model", size, payload, predicted)
    for fmt in engine_formats:
        from amq.export.compressed_tensors import save_compressed_tensors
        from amq.export.gptq import save_gptq

        target = run_dir / f"export-{fmt}"
        if fmt == "compressed-tensors":
            save_compressed_tensors(model, target, tokenizer, dtype)
        else:
            save_gptq(model, target, tokenizer, dtype, checkpoint_format=fmt)
        doc.save(target / PLAN_FILE)
        out.setdefault("engine_exports", {})[fmt] = str(target)
    return out


if __name__ == "__main__":  # python -m amq.evaluate: the command line lives in amq.cli.evaluate
    import runpy

    runpy.run_module("amq.cli.evaluate", run_name="__main__")
