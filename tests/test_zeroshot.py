"""lm-eval's harness on our quantized model object, with a small local multiple-choice task."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")

from amq.config import QuantizerConfig
from amq.models import searchable_linears
from amq.quant.apply import quantize_model
from amq.zeroshot import zero_shot

# Python-keyword completions the small model (trained on Python's docs) should get right more often than chance
DOCS = [
    {"q": "The for statement is used to iterate over the elements of a", "choices": ["sequence", "banana", "violin"], "label": 0},
    {"q": "The if statement is used for conditional", "choices": ["execution", "weather", "music"], "label": 0},
    {"q": "The while statement is used for repeated", "choices": ["execution", "colours", "oranges"], "label": 0},
    {
        "q": "The return statement leaves the current function call with the expression list (or",
        "choices": ["None", "Tuesday", "green"],
        "label": 0,
    },
]

TASK = """task: amq_tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{q}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.mark.slow
def test_zero_shot_runs_on_the_quantized_model_offline(tmp_path, small_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps(d) for d in DOCS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "amq_tiny_choice.yaml").write_text(TASK.format(path=data))

    model = AutoModelForCausalLM.from_pretrained(small_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(small_model_dir)
    quantize_model(model, {n: 4 for n in searchable_linears(model)}, QuantizerConfig(method="hqq"), show_progress=False)
    res = zero_shot(model, tok, ["amq_tiny_choice"], batch_size=4, include_path=str(tasks))
    # the same scoring by hand: the choice with the highest summed log-likelihood after " "
    hits = 0
    with torch.no_grad():
        for d in DOCS:
            ctx = tok(d["q"], add_special_tokens=False).input_ids
            scores = []
            for c in d["choices"]:
                whole = tok(d["q"] + " " + c, add_special_tokens=False).input_ids
                logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
                scores.append(sum(float(logp[i - 1, whole[i]]) for i in range(len(ctx), len(whole))))
            hits += int(max(range(len(scores)), key=scores.__getitem__) == d["label"])
    assert res["amq_tiny_choice"]["acc"] == pytest.approx(hits / len(DOCS))
