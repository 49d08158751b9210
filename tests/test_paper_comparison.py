"""The row-by-row comparison of finished table presets with the paper (the reproduction targets)."""
import json
import math

import pytest

pytest.importorskip("numpy")

from mmcl_fast.experiments.identifiability.paper_comparison import compare_table, main, targets  # noqa: E402
from mmcl_fast.experiments.identifiability.presets import preset_runs, run_directory  # noqa: E402
from mmcl_fast.experiments.identifiability.report import paper_table  # noqa: E402


def _run(p, stat, caus, content, style, modality, seed=0, seconds=10.0, loss="symmetric_infonce",
         multimodal=True, n_m=0):
    return {"config": {"p_change": p, "statistical": stat, "causal": caus, "seed": seed, "loss": loss,
                       "multimodal": multimodal, "n_m": n_m},
            "summary": {"content": content, "style": style, "modality": modality},
            "train_seconds": seconds, "steps": 100}


PAPER = {"content_r2": 0.95, "content_sd": 0.01, "style_r2": 0.56, "style_sd": 0.23,
         "modality_r2": 0.0, "modality_sd": 0.0}


@pytest.mark.parametrize("content,style,modality,expected", [
    (0.901, 0.56, 0.0, {"content": True, "style": True, "modality": True}),     # content just above paper - 0.05
    (0.899, 0.56, 0.0, {"content": False, "style": True, "modality": True}),
    (0.95, 1.01, 0.0, {"content": True, "style": True, "modality": True}),      # 2 sd = 0.46 > 0.10
    (0.95, 1.03, 0.0, {"content": True, "style": False, "modality": True}),
    (0.95, 0.56, 0.11, {"content": True, "style": True, "modality": False}),
])
def test_targets_follow_the_rule(content, style, modality, expected):
    assert targets(content, style, modality, PAPER) == expected


def test_a_small_paper_sd_leaves_a_band_of_ten_points():
    paper = dict(PAPER, style_r2=0.36, style_sd=0.01)
    assert targets(0.99, 0.455, 0.0, paper)["style"]
    assert not targets(0.99, 0.465, 0.0, paper)["style"]


def test_no_modality_target_without_modality_latents():
    assert "modality" not in targets(0.99, 0.0, float("nan"), PAPER)


def test_rows_are_matched_to_the_paper_and_averaged_over_seeds():
    paper = paper_table("table4b")
    runs = [_run(0.75, True, False, 0.97, 0.70, float("nan"), seed=0, seconds=10),
            _run(0.75, True, False, 0.95, 0.60, float("nan"), seed=1, seconds=30),
            _run(1.0, False, False, 1.0, 0.0, float("nan"))]
    entries = compare_table("table4b", runs)
    assert len(entries) == len(paper["rows"])
    stat = next(e for e in entries if e["statistical"] and not e["causal"])
    assert stat["seeds"] == 2
    assert stat["content"]["mean"] == pytest.approx(0.96)
    assert stat["style"]["mean"] == pytest.approx(0.65)
    assert stat["style"]["sd"] == pytest.approx(0.05)
    assert stat["train_seconds"] == {"mean": pytest.approx(20.0), "total": pytest.approx(40.0)}
    assert stat["paper"]["style_r2"] == pytest.approx(0.36)
    # 0.65 is 0.29 from the paper's 0.36, outside max(0.10, 2 x 0.10)
    assert stat["targets_met"] == {"content": True, "style": False}
    causal = next(e for e in entries if e["causal"] and not e["statistical"])
    assert causal["seeds"] == 0 and "targets_met" not in causal


def test_the_command_reads_finished_runs_and_writes_both_files(tmp_path):
    runs_dir = tmp_path / "runs"
    label, cfg = preset_runs("table1a", seeds=1)[0]
    folder = runs_dir / run_directory(label)
    folder.mkdir(parents=True)
    run = _run(cfg.p_change, cfg.statistical, cfg.causal, 0.98, 0.01, float("nan"), multimodal=False)
    folder.joinpath("results.json").write_text(json.dumps(run))
    entries = main(["--table", "table1a", str(runs_dir), "--seeds", "1", "--out", str(tmp_path / "cmp")])
    assert sum(e["seeds"] for e in entries) == 1
    written = json.loads((tmp_path / "cmp.json").read_text())
    assert written[0]["content"]["mean"] == pytest.approx(0.98)
    assert math.isnan(written[0]["modality"]["mean"])
    md = (tmp_path / "cmp.md").read_text()
    assert "not run" in md and "| table1a | 1.0 | 0 | 0 | 1 | 0.98 ± 0.00 |" in md
    with pytest.raises(SystemExit, match="no finished run"):
        main(["--table", "table4a", str(tmp_path / "empty"), "--out", str(tmp_path / "none")])
    # Table 1 (b) names its run folders as Table 1 (a) does: its runs must not be taken for them
    with pytest.raises(SystemExit, match=r"'multimodal': False.*table1b.*another table"):
        main(["--table", "table1b", str(runs_dir), "--seeds", "1", "--out", str(tmp_path / "wrong")])
