"""amq.report over a folder of evaluate results: table, plot, W&B group (offline)."""

from __future__ import annotations

import json

import pytest

from amq.cli.report import main


def _result(d, method, source, bits, ppl, budget=None):
    d.mkdir(parents=True)
    doc = {
        "method": method,
        "plan_source": source,
        "budget": budget,
        "avg_bits": bits,
        "model_gb": bits / 100,
        "perplexity": {"wikitext2": {"ppl": ppl, "seq_len": 2048, "windows": 10}},
    }
    if method != "fp16":
        doc["vs_16bit"] = {"kl": 0.1 / bits, "jsd": 0.02 / bits, "same_top_token": 0.9, "test": "wikitext2", "seq_len": 2048, "windows": 4}
    (d / "result.json").write_text(json.dumps(doc))


def test_report_writes_table_plot_and_wandb_offline(tmp_path, capsys):
    _result(tmp_path / "0_fp16", "fp16", "none", 16.0, 10.0)
    _result(tmp_path / "1_u3", "gptq", "uniform", 3.0, 12.5)
    _result(tmp_path / "2_ilp", "gptq", "ilp", 2.5, 14.0, budget=2.5)
    _result(tmp_path / "3_ilp", "gptq", "ilp", 3.0, 12.0, budget=3.0)
    assert main([str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "wikitext2 ppl (ctx 2048)" in md and "| ilp+gptq | 2.5 | 2.500 |" in md and "| 16-bit |" in md
    assert md.index("16-bit") < md.index("ilp+gptq")  # the reference row comes first
    assert "KL vs 16-bit (wikitext2, 4 x ctx 2048)" in md and "| 0.04000 | 0.00800 | 90.00% |" in md
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_report_refuses_an_empty_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path)])
    assert exc.value.code == 2
    assert "no result.json" in capsys.readouterr().err
