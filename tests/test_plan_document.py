"""The plan document: one typed, versioned object that round-trips, upgrades format 1, and refuses
to be applied where it does not fit (group size, layer names, model shapes), naming the field."""

from __future__ import annotations

import json

import pytest

from amq.config import AMQConfigError, PlanConfig
from amq.cost import build_cost_model
from amq.models import LayerInfo
from amq.plan_document import PLAN_FORMAT, PlanBudget, PlanDocument
from amq.plan_sources import build_plan

NAMES = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj", "model.layers.1.mlp.down_proj"]


def _doc(**over) -> PlanDocument:
    fields = dict(
        model="/m",
        model_fingerprint="abc",
        layers=dict(zip(NAMES, [2, 3, 4], strict=True)),
        group_size=128,
        choices=[2, 3, 4],
        source="search",
        avg_bits=3.1,
        bytes=1000,
        model_gb=1e-6,
        divergence=0.05,
        search={"metric": "jsd", "tie": []},
        budget=PlanBudget(value=3.0, unit="bits", bytes=1010),
    )
    return PlanDocument(**{**fields, **over})


def test_round_trips_through_json_and_a_file(tmp_path):
    doc = _doc()
    again = PlanDocument.from_json(json.loads(json.dumps(doc.to_json())), "here")
    assert again == doc and again.format == PLAN_FORMAT
    doc.save(tmp_path / "p.json")
    assert PlanDocument.load(tmp_path / "p.json") == doc
    schema = PlanDocument.model_json_schema()
    assert {"model", "layers", "group_size", "choices", "source", "avg_bits", "bytes", "model_gb"} <= set(schema["required"])


def test_a_format_1_plan_is_read_and_upgraded():
    v1 = {
        "version": 1, "model": "/m", "group_size": 128, "choices": [2, 3, 4], "proxy": "hqq", "metric": "jsd",
        "metric_context": {"seq_len": 256, "samples": 16}, "tie": [], "avg_bits": 3.0, "bytes": 10, "model_gb": 1e-8,
        "divergence": 0.1, "predicted_divergence": 0.11, "layers": dict(zip(NAMES, [3, 3, 3], strict=True)),
        "budget": {"value": 3.0, "unit": "bits", "bytes": 10},
        "chosen_by": {"method": "gptq", "sources": ["ilp", "nsga"], "divergence": 0.2, "competitors": 4, "data": "x"},
    }  # fmt: skip
    doc = PlanDocument.from_json(v1, "old.json")
    assert doc.format == PLAN_FORMAT and doc.source == "ilp+nsga" and doc.search["proxy"] == "hqq"
    assert doc.layers == v1["layers"] and doc.budget.bytes == 10
    replanned = PlanDocument.from_json({**v1, "from": "repair"}, "old.json")
    assert replanned.source == "amq.plan:repair"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layers": {NAMES[0]: 5}}, "here: not a valid plan document: layers use [5] bits, not in choices"),
        ({"group_size": "big"}, "here: not a valid plan document: group_size:"),
        ({"format": PLAN_FORMAT + 1}, "is newer than this amq reads"),
        ({"budget": {"value": 3, "unit": "MB", "bytes": 1}}, "budget.unit:"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_a_bad_document_is_one_line_naming_the_field(change, message):
    bad = {**_doc().to_json(), **change}
    with pytest.raises(AMQConfigError) as err:
        PlanDocument.from_json(bad, "here")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_applying_checks_group_size_layer_names_and_model():
    doc = _doc()
    assert doc.bits_for(NAMES, 128, "abc") == dict(zip(NAMES, [2, 3, 4], strict=True))
    with pytest.raises(AMQConfigError, match="group_size is 128, but the quantizer uses 64"):
        doc.bits_for(NAMES, 64)
    with pytest.raises(AMQConfigError, match=r"layers do not match .* \(missing \['model.layers.2.x'\]"):
        doc.bits_for([*NAMES, "model.layers.2.x"], 128)
    with pytest.raises(AMQConfigError, match="model_fingerprint differs"):
        doc.bits_for(NAMES, 128, "other")


def test_evaluate_refuses_a_plan_made_at_another_group_size(tmp_path):
    """A plan searched at group size 64 is never applied at 128 silently."""
    layers = [LayerInfo(n, 128, 256) for n in NAMES]
    cost = build_cost_model(layers, [2, 3, 4], 128, 10_000)
    _doc(group_size=64).save(tmp_path / "p.json")
    with pytest.raises(AMQConfigError, match="group_size is 64, but the quantizer uses 128"):
        build_plan(PlanConfig(source="file", path=str(tmp_path / "p.json")), NAMES, cost)
    _doc().save(tmp_path / "q.json")
    assert build_plan(PlanConfig(source="file", path=str(tmp_path / "q.json")), NAMES, cost)[NAMES[2]] == 4
