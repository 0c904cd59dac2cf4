"""Every config option composes, validates, and bad input is refused with one clear line."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from amq.config import AMQConfigError, register_configs, to_object

CONF = str(Path(__file__).resolve().parents[1] / "conf")
register_configs()


def _compose(overrides=(), root="config"):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name=root, overrides=list(overrides))


EVALUATE_ONLY = {"quantizer", "plan"}  # groups of `python -m amq.evaluate` (conf/evaluate.yaml)


GROUPS = {g.name: sorted(p.stem for p in g.glob("*.yaml")) for g in Path(CONF).iterdir() if g.is_dir() and g.name != "experiment"}


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_composes(group, option):
    overrides = [f"{group}={option}"]
    if option in ("local", "text", "file", "ilp", "greedy"):
        overrides.append(f"{group}.path=/x")
    if option in ("ilp", "greedy"):
        overrides.append("plan.budget=3.0")
    cfg = to_object(_compose(overrides, "evaluate" if group in EVALUATE_ONLY else "config"))
    assert getattr(cfg, group) is not None


@pytest.mark.parametrize("exp", sorted(p.stem for p in (Path(CONF) / "experiment").glob("*.yaml")))
def test_experiments_compose(exp):
    cfg = _compose([f"+experiment={exp}", "model.path=/m", "data.path=/d"])
    to_object(cfg)


def test_llama2_7b_experiments_one_gpu_and_the_paper():
    cfg = to_object(_compose(["+experiment=llama2_7b"]))
    assert cfg.model.path == "meta-llama/Llama-2-7b-hf"
    assert cfg.bits.choices == [2, 3, 4] and cfg.bits.group_size == 128
    assert (cfg.data.num_samples, cfg.data.seq_len) == (64, 2048) and cfg.search.sensitivity_bits == "lowest"
    assert cfg.search.sensitivity_samples == 32 and (cfg.final.samples, cfg.final.seq_len) == (32, 2048)
    paper = to_object(_compose(["+experiment=llama2_7b_paper"]))
    assert (paper.data.num_samples, paper.data.seq_len) == (128, 2048)
    assert (paper.search.initial_random, paper.search.iterations, paper.search.candidates) == (250, 200, 50)
    assert to_object(_compose(["+experiment=llama2_13b"])).model.path == "meta-llama/Llama-2-13b-hf"


@pytest.mark.parametrize(
    "override,message",
    [
        ("bits.choices=[2,9]", "9-bit layers are not supported"),
        ("bits.choices=[2,7]", "7-bit layers are not supported; choose from 2, 3, 4, 8"),
        ("search.budgets=[1.0]", "1 bits is outside what bits.choices=.2, 3, 4. can reach"),
        ("search.budgets=[]", "non-empty list"),
        ("search.storage=study.db", "expected a journal file"),
        ("bits.group_size=0", "group_size"),
        ("search.metric=mse", "jsd or kl"),
        ("proxy.storage=zip", "dense or codes"),
    ],
)
def test_bad_values_are_refused(override, message):
    with pytest.raises(AMQConfigError, match=message):
        to_object(_compose([override]))


def test_plan_bits_must_be_supported():
    with pytest.raises(AMQConfigError, match="5-bit layers are not supported"):
        to_object(_compose(["plan.bits=5"], "evaluate"))


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "amq.run", *args, "logger=none", f"hydra.run.dir={cwd}/run"],
        capture_output=True,
        text=True,
        cwd=Path(CONF).parent,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["model.path=/no/such/model"], "no such model directory"),
        (["bits.choices=[0,2]"], "0-bit layers are not supported"),
        (["data=text", "data.path=/no/such.txt"], "no such file"),
        (["model=nope"], "Could not find 'model/nope'"),
    ],
)
def test_cli_bad_input_is_one_clear_line(tmp_path, args, message):
    r = _cli(*args, cwd=tmp_path)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_group_size_and_budget_checked_before_heavy_work(tmp_path, small_model_dir):
    r = _cli(f"model.path={small_model_dir}", "bits.group_size=96", cwd=tmp_path)
    assert r.returncode == 2 and "does not divide the input width 128" in r.stderr
    r = _cli(f"model.path={small_model_dir}", "search.budgets=[1.5]", cwd=tmp_path)
    assert r.returncode == 2 and "1.5 bits is outside what bits.choices=[2, 3, 4] can reach" in r.stderr
    assert not (tmp_path / "run" / "sensitivity.json").exists()
    r = _cli(f"model.path={small_model_dir}", "search.budget_unit=gb", "search.budgets=[9.0]", cwd=tmp_path)
    assert r.returncode == 2 and "achievable range" in r.stderr


def test_cli_checks_everything_before_building_a_model(tmp_path):
    """tiny-qwen2 does not ship with the package: a run with a bad budget must refuse at once,
    not build (train) it first."""
    cache = tmp_path / "cache"
    for bad in ("search.budgets=[1.0]", "bits.choices=[2,7]", "search.storage=nowhere"):
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "amq.run", "model=tiny_qwen2", bad, "logger=none", f"hydra.run.dir={tmp_path}/run"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            env={**os.environ, "AMQ_CACHE_DIR": str(cache)},
        )
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: ")
        assert time.perf_counter() - t0 < 60
    assert not cache.exists() or not any(cache.iterdir())


@pytest.mark.parametrize(
    "overrides,name",
    [
        ([], "tiny-llama"),
        (["model=tiny_qwen2"], "tiny-qwen2"),
        (["model=local", "model.path=/models/my-llama/"], "my-llama"),
        (["model.path=/models/amq-llama-17m"], "amq-llama-17m"),
        (["model=llama2_7b"], "Llama-2-7b-hf"),
        (["model.path=/models/x", "model.name=mine"], "mine"),
    ],
)
def test_the_model_name_comes_from_the_model(overrides, name):
    dcfg = _compose(overrides)
    assert dcfg.run_name == name  # the run dir is outputs/<run_name>/<time>
    assert to_object(dcfg).model.name == name
    ecfg = _compose(overrides, "evaluate")
    assert ecfg.run_name.startswith(f"{name}-")
