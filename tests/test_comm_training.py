"""CoMM's trainer and CLI on bimodal Trifeatures at toy scale: every method runs, checkpoints and
resumes exactly, the probes score every task, the table sits next to the paper's numbers."""
import json

import numpy as np
import pytest
import torch

from mmcl_fast.experiments.comm import run_comm
from mmcl_fast.experiments.comm.config import CommConfig
from mmcl_fast.experiments.comm.model import BimodalModel
from mmcl_fast.experiments.comm.training import CommRun
from mmcl_fast.experiments.common.checkpoint import restore_checkpoint, save_checkpoint

TOY = dict(batch_size=16, encoder_width=8, width=16, threads=1)


@pytest.fixture(scope="module")
def train_data():
    from mmcl_fast.experiments.comm.trifeatures import render_split
    return render_split("train", seed=0, rendering="direct")  # the faster renderer: the trainer does not care


def test_model_embeddings_have_the_expected_shapes():
    m = BimodalModel(encoder_width=8, width=16)
    x = torch.rand(5, 3, 64, 64)
    z1, z2, zf = m.comm_embeddings(x, x)
    assert z1.shape == z2.shape == zf.shape == (5, 64)
    assert m.fused_representation(x, x).shape == (5, 16) and m.pooled(x, 1).shape == (5, 8)
    assert m.encoder_output(x, 0).shape == (5, 128) and m.clip_embedding(x, 1).shape == (5, 64)
    assert {k: v.shape for k, v in m.pair_logits(x, x).items()} == {"R": (5, 10), "U1": (5, 10), "U2": (5, 10),
                                                                    "S": (5, 2)}
    # the unimodal projection drops the other modality: Z_1 does not depend on x2
    m.eval()
    a = m.comm_embeddings(x, torch.rand(5, 3, 64, 64))[0]
    b = m.comm_embeddings(x, torch.rand(5, 3, 64, 64))[0]
    assert torch.allclose(a, b)


@pytest.mark.parametrize("method", ["cross", "cross_self", "comm", "supervised"])
def test_probe_features_are_the_ones_the_authors_code_extracts(method, train_data):
    # CoMM (and the supervised control): the fused CLS before the head; Cross: both CLIP
    # embeddings, a linear projection of the encoder outputs; Cross+Self: both encoder outputs.
    run = CommRun(CommConfig(method=method, steps=1, **TOY), train_data)
    pairs = np.array([[0, 1], [2, 3], [4, 5]])
    feats = run.features(train_data, pairs)
    x1, x2 = (torch.from_numpy(train_data.images[pairs[:, k]]) for k in (0, 1))
    m = run.model
    with torch.no_grad():
        expected = {"comm": lambda: m.fused_representation(x1, x2),
                    "supervised": lambda: m.fused_representation(x1, x2),
                    "cross": lambda: torch.cat([m.clip_embedding(x1, 0), m.clip_embedding(x2, 1)], 1),
                    "cross_self": lambda: torch.cat([m.encoder_output(x1, 0), m.encoder_output(x2, 1)], 1)}[method]()
        common = torch.cat([m.pooled(x1, 0), m.pooled(x2, 1)], 1)
    np.testing.assert_allclose(feats, expected.double().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.features(train_data, pairs, "pooled"), common.double().numpy(), rtol=1e-5,
                               atol=1e-6)
    assert run.probe_points()[:2] == (run.PROBE_FEATURES[method], "pooled")
    assert run.probe_points()[2:] == (("encoder",) if method == "cross" else ())


@pytest.mark.parametrize("method,pairs", [("cross", "unbiased"), ("cross_self", "unbiased"), ("comm", "unbiased"),
                                          ("supervised", "unbiased"), ("supervised", "biased")])
def test_each_method_trains_and_resumes_exactly(method, pairs, train_data, tmp_path):
    cfg = CommConfig(method=method, pairs=pairs, steps=4, **TOY)
    full = CommRun(cfg, train_data)
    losses = [full.step() for _ in range(4)]
    assert all(np.isfinite(losses))
    half = CommRun(cfg, train_data)
    half.step(), half.step()
    save_checkpoint(half, tmp_path / "ckpt.pt")
    resumed = CommRun(cfg, train_data)
    assert restore_checkpoint(resumed, tmp_path / "ckpt.pt")
    assert resumed.step_count == 2
    assert [resumed.step() for _ in range(2)] == pytest.approx(losses[2:], rel=1e-5)


@pytest.mark.slow
def test_cli_scores_every_task_and_writes_the_table(tmp_path):
    flags = ["--method", "comm", "--rendering", "direct", "--steps", "3", "--batch-size", "16",
             "--encoder-width", "8", "--width", "16", "--threads", "1", "--out", str(tmp_path), "--quiet"]
    table = run_comm.main(flags)
    assert [r["variant"] for r in table["rows"]] == ["comm", "supervised"]  # the control trains by default
    assert table["paper"]["CoMM"] == pytest.approx({"R": 0.999, "U": 0.878, "S": 0.719})
    for row in table["rows"]:
        for task in ("R", "U1", "U2", "U", "S"):
            assert 0.0 <= row[f"{task}_score"]["mean"] <= 1.0 and 0.0 <= row[f"{task}_r"]["mean"] <= 1.0
    seed0 = table["per_seed"]["comm"]["0"]
    c = table["per_seed"]["supervised"]["0"]["R"]["score"]
    assert seed0["R"]["C"] == c
    if c != seed0["R"]["r"]:
        assert seed0["R"]["G"] == pytest.approx((seed0["R"]["score"] - seed0["R"]["r"]) / (c - seed0["R"]["r"]))
    assert table["protocol"]["status"] == "incomplete"  # Cross and Cross+Self did not run
    saved = json.loads((tmp_path / "comm_trifeatures.json").read_text())
    assert saved["rows"][0]["variant"] == "comm"
    assert "| comm |" in (tmp_path / "comm_trifeatures.md").read_text()
    for pairs in ("unbiased", "biased"):
        assert (tmp_path / "comm" / pairs / "seed0" / "checkpoint.pt").exists()
    with pytest.raises(SystemExit, match="--ablation sets the method"):
        run_comm.main(["--ablation", "--method", "cross", "--out", str(tmp_path)])


def test_checkpoints_of_another_configuration_are_refused(train_data, tmp_path):
    from mmcl_fast.experiments.common.checkpoint import CheckpointMismatch

    old = CommRun(CommConfig(method="comm", steps=2, rendering="direct", **TOY), train_data)
    old.step()
    save_checkpoint(old, tmp_path / "ckpt.pt")
    new = CommRun(CommConfig(method="comm", steps=2, **TOY), train_data)
    with pytest.raises(CheckpointMismatch, match="rendering"):
        restore_checkpoint(new, tmp_path / "ckpt.pt")


def test_bad_configurations_are_refused_naming_the_field():
    for kwargs, field in [({"method": "clip"}, "method"), ({"rendering": "3d"}, "rendering"),
                          ({"lr_schedule": "step"}, "lr_schedule"), ({"warmup": -1}, "warmup"),
                          ({"encoder_dim": 0}, "encoder_dim")]:
        with pytest.raises(ValueError, match=field):
            CommConfig(**kwargs)


def test_ablation_weights_and_config_errors():
    assert run_comm.variants("comm", ablation=True)["comm_full_only"]["term_weights"] == "0,0,1"
    assert CommConfig(term_weights="1,1,0").weights() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="term_weights"):
        CommConfig(term_weights="1,1")
    with pytest.raises(ValueError, match="term_weights"):
        CommConfig(term_weights="0,0,0")
    with pytest.raises(ValueError, match="method"):
        CommConfig(method="factorcl")
    with pytest.raises(ValueError, match="pairs"):
        CommConfig(pairs="all")


def test_features_of_every_kind_and_a_clear_error_for_others(train_data):
    run = CommRun(CommConfig(method="comm", steps=1, **TOY), train_data)
    pairs = np.array([[0, 1], [2, 3]])
    x1, x2 = (torch.from_numpy(train_data.images[pairs[:, k]]) for k in (0, 1))
    m = run.model
    feats = run.features(train_data, pairs, "unimodal_fused")  # puts the model in eval mode
    with torch.no_grad():
        alone = torch.cat([m.unimodal_fused_representation(x1, 0), m.unimodal_fused_representation(x2, 1)], 1)
    np.testing.assert_allclose(feats, alone.double().numpy(), rtol=1e-5, atol=1e-6)
    assert run.features(train_data, pairs, "pooled").shape == (2, 16)
    with pytest.raises(ValueError, match="kind must be one of"):
        run.features(train_data, pairs, "logits")


@pytest.mark.slow
def test_probe_features_scores_a_checkpoint_and_its_random_init(tmp_path, capsys):
    from mmcl_fast.experiments.comm.probe_features import main as probe_main

    run = CommRun(CommConfig(method="comm", steps=2, rendering="direct", **TOY))
    run.step(), run.step()
    save_checkpoint(run, tmp_path / "checkpoint.pt")
    out = probe_main([str(tmp_path), "--kinds", "fused", "pooled", "--out", str(tmp_path / "p.json")])
    assert set(out) == {"config", "step", "trained/fused", "trained/pooled", "random_init/fused", "random_init/pooled"}
    assert out["step"] == 2
    for key in ("trained/fused", "random_init/pooled"):
        assert {"R", "U1", "U2", "U"} <= set(out[key]) and all(0 <= out[key][t] <= 1 for t in ("R", "U1", "U2"))
    assert out["trained/fused"] != out["random_init/fused"]  # the checkpoint's weights were loaded
    assert json.loads((tmp_path / "p.json").read_text())["step"] == 2
    assert "trained      fused" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt"):
        probe_main([str(tmp_path / "nothing")])
