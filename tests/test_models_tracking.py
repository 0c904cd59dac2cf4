from pathlib import Path

import pytest
import torch

from amq.config import LoggerConfig
from amq.models import layer_infos, searchable_linears
from amq.tracking import Tracker


def _meta_model(config):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_searchable_linears_are_the_decoder_blocks_linears(family):
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(
        family, hidden_size=256, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, vocab_size=1000
    )
    model = _meta_model(cfg)
    names = list(searchable_linears(model))
    assert len(names) == 3 * 7
    assert all(".layers." in n for n in names)
    assert not any("lm_head" in n or "embed" in n for n in names)
    kinds = {n.rsplit(".", 1)[-1] for n in names}
    assert kinds == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    k_proj = next(i for i in layer_infos(model) if i.name.endswith("0.self_attn.k_proj"))
    assert (k_proj.out_features, k_proj.in_features) == (2 * 64, 256)  # GQA: 2 kv heads of 64


def test_wandb_offline_run_is_written(tmp_path):
    tracker = Tracker(LoggerConfig(name="wandb", mode="offline"), tmp_path, {"a": 1}, "test")
    try:
        tracker.log({"archive/size": 3, "search/hypervolume": 0.5}, step=0)
        tracker.table("search/front", ["avg_bits", "divergence"], [[3.0, 0.1]], step=0)
    finally:
        tracker.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_logger_none_is_a_no_op(tmp_path):
    tracker = Tracker(LoggerConfig(name="none", mode="disabled"), tmp_path, {}, "x")
    tracker.log({"a": 1})
    tracker.finish()
    assert not (tmp_path / "wandb").exists()


def test_wandb_gets_every_iteration_from_step_0(tmp_path, small_model_dir, monkeypatch):
    """A step-less log before step 0 made W&B drop iteration 0 ("ignoring partial history
    record"): every history call of a search carries its iteration, from 0, never going back."""
    from hydra import compose, initialize_config_dir

    import amq.search.loop as loop
    from amq.config import register_configs, to_object

    calls: list[tuple[str, int | None]] = []

    class Recorder:
        run_id = "rec"
        run = True  # as an active W&B run

        def __init__(self, *a, **k) -> None:
            pass

        def log(self, metrics, step=None):
            calls.append(("log", step))

        def table(self, key, columns, rows, step=None):
            calls.append(("table", step))

        def image(self, key, path, step=None):
            calls.append(("image", step))

        def summary(self, values):
            pass

        def artifact(self, name, kind, files, metadata=None):
            calls.append(("artifact", None))
            assert kind == "amq-plan" and {f.name for f in files} >= {"3bits.json", "pareto.json"}

        def finish(self):
            pass

    monkeypatch.setattr(loop, "Tracker", Recorder)
    register_configs()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        dcfg = compose(
            "config",
            [
                f"model.path={small_model_dir}",
                "search.initial_random=6",
                "search.iterations=2",
                "search.candidates=4",
                "optimizer.generations=3",
                "final=none",
            ],
        )
    loop.run_search(to_object(dcfg), tmp_path / "run", show_progress=False)
    stepped = [s for _, s in calls if s is not None]
    last_stepped = max(i for i, (_, s) in enumerate(calls) if s is not None)
    assert calls[0][1] == 0, calls[:3]  # nothing step-less before iteration 0
    assert all(s is not None for _, s in calls[: last_stepped + 1])  # step-less calls only after the iterations
    assert stepped == sorted(stepped) and set(stepped) == {0, 1, 2}
    assert ("artifact", None) in calls  # the chosen plan documents, as one W&B artifact
