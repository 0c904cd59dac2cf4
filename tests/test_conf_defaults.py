"""Each config value has one home: a YAML option sets only what differs from its dataclass's
default (amq/config.py), so the two cannot drift apart."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from amq import config as C

CONF = Path(C.__file__).parent / "conf"
GROUPS = {
    "model": C.ModelConfig, "bits": C.BitsConfig, "proxy": C.ProxyConfig, "predictor": C.PredictorConfig,
    "optimizer": C.OptimizerConfig, "data": C.DataConfig, "search": C.SearchConfig, "final": C.FinalConfig,
    "logger": C.LoggerConfig, "quantizer": C.QuantizerConfig, "plan": C.PlanConfig,
}  # fmt: skip


def _defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_group_options_only_set_what_differs_from_the_schema(group):
    defaults = _defaults(GROUPS[group])
    for option in sorted((CONF / group).glob("*.yaml")):
        doc = yaml.safe_load(option.read_text()) or {}
        unknown = sorted(set(doc) - set(defaults))
        same = sorted(k for k, v in doc.items() if k in defaults and defaults[k] == v)
        assert not unknown, f"{option}: keys the schema does not have: {unknown}"
        assert not same, f"{option}: repeats the dataclass default of {same} (keep each value in amq/config.py)"
