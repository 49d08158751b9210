"""Generative process, evaluation and trainer of the numerical simulation."""
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from mmcl_fast.experiments.common.evaluation import accuracy_scores, r2_scores
from mmcl_fast.experiments.identifiability import config, encoders, figures, presets, report, simulate, training
from mmcl_fast.experiments.identifiability.sim_data import (
    InvertibleMLP,
    LatentSampler,
    LatentSpec,
    MultimodalProcess,
    condition_threshold,
)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixing_function_is_invertible_and_well_conditioned(seed):
    f = InvertibleMLP(15, seed=seed, n_cond_draws=2000)
    for w in f.weights:
        assert np.linalg.cond(w.double().numpy()) < f.threshold
        assert torch.allclose(w.norm(dim=0), torch.ones(15), atol=1e-5)  # L2-normalised columns
    z = torch.randn(500, 15, generator=_gen(seed))
    x = f(z)
    assert not torch.allclose(x, z)
    assert torch.allclose(f.inverse(x), z, atol=1e-4)


def test_condition_threshold_is_the_requested_quantile():
    thr = condition_threshold(15, ratio=1e-2, n_draws=3000, seed=5)
    rng = np.random.default_rng(5)
    w = rng.uniform(-1, 1, size=(3000, 15, 15))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    conds = np.linalg.cond(w)
    assert (conds < thr).sum() == 29 and (conds <= thr).sum() == 30  # the 30th smallest of 3000


def test_independent_latents_and_style_change_probability():
    spec = LatentSpec(p_change=0.75)
    z = LatentSampler(spec, seed=0).sample(20000, _gen(0))
    cov = np.cov(torch.cat([z["c"], z["s"], z["m1"], z["m2"]], 1).numpy().T)
    assert np.abs(cov - np.eye(20)).max() < 0.05
    changed = (z["s_tilde"] != z["s"]).float().mean().item()
    sd = (0.75 * 0.25 / z["s"].numel()) ** 0.5
    assert abs(changed - 0.75) < 5 * sd
    for p in (0.0, 1.0):
        zp = LatentSampler(LatentSpec(p_change=p), seed=0).sample(1000, _gen(1))
        assert (zp["s_tilde"] != zp["s"]).float().mean().item() == p


def test_statistical_dependence_follows_the_wishart_covariance():
    sampler = LatentSampler(LatentSpec(statistical=True), seed=3)
    z = sampler.sample(50000, _gen(2))
    sigma = (sampler.chol["c"] @ sampler.chol["c"].T).numpy()
    assert np.abs(sigma - np.diag(np.diag(sigma))).max() > 0.5  # genuinely correlated
    emp = np.cov(z["c"].numpy().T)
    assert np.abs(emp - sigma).max() < 0.05 * np.abs(sigma).max()


def test_causal_dependence_of_style_on_content():
    sampler = LatentSampler(LatentSpec(causal=True), seed=4)
    z = sampler.sample(20000, _gen(3))
    c, s = z["c"].numpy(), z["s"].numpy()
    X = np.c_[c, np.ones(len(c))]
    coef, *_ = np.linalg.lstsq(X, s, rcond=None)
    assert np.allclose(coef[:-1].T, sampler.B.numpy(), atol=0.05)
    assert np.allclose(coef[-1], sampler.a.numpy(), atol=0.05)
    indep = LatentSampler(LatentSpec(causal=False), seed=4).sample(20000, _gen(3))
    assert abs(np.corrcoef(indep["c"][:, 0], indep["s"][:, 0])[0, 1]) < 0.05


def test_original_setting_shares_the_mixing_function_and_content_is_shared():
    proc = MultimodalProcess(LatentSpec(n_m=0), multimodal=False, seed=0, n_cond_draws=200)
    assert proc.f1 is proc.f2
    proc2 = MultimodalProcess(LatentSpec(), multimodal=True, seed=0, n_cond_draws=200)
    assert not torch.equal(proc2.f1.weights, proc2.f2.weights)
    x1, x2, z = proc2.sample(64, _gen(0))
    z1 = proc2.f1.inverse(x1)
    assert torch.allclose(z1[:, :5], z["c"], atol=1e-4) and torch.allclose(z1[:, 5:10], z["s"], atol=1e-4)
    z2 = proc2.f2.inverse(x2)
    assert torch.allclose(z2[:, :5], z["c"], atol=1e-4) and torch.allclose(z2[:, 5:10], z["s_tilde"], atol=1e-4)


def test_intervention_permutes_content_only():
    proc = MultimodalProcess(LatentSpec(), seed=0, n_cond_draws=200)
    x1, x2, z = proc.sample(128, _gen(0))
    xi1, xi2, c_prime = proc.intervene(z, _gen(1))
    assert sorted(c_prime[:, 0].tolist()) == sorted(z["c"][:, 0].tolist())
    assert not torch.equal(c_prime, z["c"])
    zi = proc.f1.inverse(xi1)
    assert torch.allclose(zi[:, :5], c_prime, atol=1e-4) and torch.allclose(zi[:, 5:10], z["s"], atol=1e-4)


def test_r2_of_a_bijection_is_one_and_of_noise_is_zero():
    rng = np.random.default_rng(0)
    c = rng.standard_normal((1200, 3))
    noise = rng.standard_normal((1200, 3))
    f = InvertibleMLP(3, seed=1, n_cond_draws=500)                # a nonlinear bijection of c
    h = f(torch.from_numpy(c).float()).numpy()
    r = r2_scores(h, {"c": c, "noise": noise})
    assert r["c"]["nonlinear"] > 0.95
    assert r["c"]["linear"] < r["c"]["nonlinear"]
    assert abs(r["noise"]["nonlinear"]) < 0.05 and abs(r["noise"]["linear"]) < 0.05


def _tiny(**kw):
    base = dict(hidden=(16, 16), batch_size=64, steps=10, lr=1e-3, eval_samples=200,
                n_cond_draws=500, nonlinear_eval=False, checkpoint_every=5)
    return config.SimConfig(**{**base, **kw})


def test_training_resumes_exactly_from_a_checkpoint(tmp_path):
    straight = training.train(_tiny(steps=10), tmp_path / "a", progress=False)
    training.train(_tiny(steps=5), tmp_path / "b", progress=False)
    resumed = training.train(_tiny(steps=10), tmp_path / "b", progress=False)
    assert resumed["steps"] == straight["steps"] == 10
    sa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["state"]
    sb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["state"]
    for k in sa["g1"]:
        assert torch.equal(sa["g1"][k], sb["g1"][k])
    assert resumed["val_loss"] == straight["val_loss"]
    # the training-loss curve (Fig. 6 b/d) is checkpointed: the resumed run logs the same curve
    assert [p[0] for p in straight["loss_curve"]] == list(range(1, 11))
    assert resumed["loss_curve"] == straight["loss_curve"]
    again = training.train(_tiny(steps=10), tmp_path / "b", progress=False)  # finished: reused
    assert again["train_seconds"] == resumed["train_seconds"] and again["eval_seconds"] == resumed["eval_seconds"]
    with pytest.raises(ValueError, match=r"different configuration \(lr: 0.001 in the checkpoint, 0.0005 now\)"):
        training.train(_tiny(steps=12, lr=5e-4), tmp_path / "b", progress=False)


def test_short_training_reduces_the_loss_and_cli_writes_results(tmp_path):
    rows = simulate.main(["--preset", "quick", "--steps", "60", "--batch-size", "256", "--hidden", "32", "32",
                          "--eval-samples", "200", "--nonlinear-eval", "false", "--no-progress",
                          "--out", str(tmp_path)])
    r = rows[0]
    first = training.Simulation(config.SimConfig(**{**r["config"], "hidden": tuple(r["config"]["hidden"])}))
    x1, x2, _ = first.process.sample(256, _gen(0))
    assert r["final_train_loss"] < first.loss(x1, x2, _gen(1)).item()  # trained below the initial loss
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved[0]["summary"].keys() >= {"content", "style", "modality"}
    assert (tmp_path / "results.csv").exists() and (tmp_path / "report.md").exists()


def test_report_places_paper_numbers_next_to_results():
    cfg = config.SimConfig(p_change=0.75, statistical=True, causal=False)
    row = {"config": asdict(cfg), "val_loss": 1.0,
           "summary": {"content": 0.9, "style": 0.5, "modality": 0.0}}
    text = report.report("table1b", [row])
    assert "0.95, 0.01, 0.56, 0.23, 0.00, 0.00" in text  # paper row (0.75, stat, no causal)
    assert len(presets.preset_runs("table1b", seeds=3)) == 3 * len(presets.TABLE1_ROWS)


@pytest.mark.parametrize("hidden", [(64, 256, 64), (150, 750, 150)])
def test_kaiming_init_keeps_the_encoding_scale_and_torch_init_shrinks_it(hidden):
    torch.manual_seed(3)
    x = torch.randn(2048, 15)
    with torch.no_grad():
        std = {init: encoders.encoder(15, hidden, 5, init=init)(x).std(0) for init in ("torch", "kaiming")}
    # variance-preserving: every output direction within a factor ~3 of the input's unit scale
    assert std["kaiming"].min() > 0.3 and std["kaiming"].max() < 3.0
    # PyTorch's default shrinks the scale by about 6x in variance per LeakyReLU layer
    assert std["torch"].max() < 0.2 * std["kaiming"].min()
    with pytest.raises(ValueError, match="init"):
        encoders.encoder(15, hidden, 5, init="xavier")


@pytest.mark.parametrize("group,block", [("content", "c"), ("style", "s"), ("modality", "m1")])
@pytest.mark.parametrize("k", [3, 7])
def test_discrete_latents_have_k_standardised_levels(group, block, k):
    spec = LatentSpec(discrete=group, n_classes=k)
    z = LatentSampler(spec, seed=k).sample(60_000, _gen(k))
    v = z[block]
    assert torch.unique(v).numel() == k
    assert abs(v.mean().item()) < 0.02 and abs(v.var().item() - 1.0) < 0.03
    cls = spec.classes(v)
    counts = torch.bincount(cls.flatten(), minlength=k).float() / cls.numel()
    assert torch.allclose(counts, torch.full((k,), 1.0 / k), atol=0.01)   # uniform classes
    other = "s" if block == "c" else "c"
    assert torch.unique(z[other]).numel() > 1000                          # the rest stays Gaussian
    if group == "style":   # a changed component is redrawn: it differs with prob p (1 - 1/k)
        changed = (z["s"] != z["s_tilde"]).float().mean().item()
        assert abs(changed - spec.p_change * (1 - 1 / k)) < 0.01
        assert torch.unique(z["s_tilde"]).numel() == k


def test_discrete_latents_reject_bad_settings():
    with pytest.raises(ValueError, match="discrete"):
        LatentSpec(discrete="colour")
    with pytest.raises(ValueError, match="n_classes"):
        LatentSpec(discrete="style", n_classes=1)
    with pytest.raises(ValueError, match="causal"):
        LatentSpec(discrete="content", causal=True)


def test_accuracy_scores_of_a_class_code_and_of_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(1200, 2))
    code = np.concatenate([np.eye(4)[labels[:, 0]], np.eye(4)[labels[:, 1]]], 1) + 0.05 * rng.standard_normal((1200, 8))
    good = accuracy_scores(code, {"c": labels})["c"]
    assert good["linear"] > 0.98 and good["nonlinear"] > 0.98
    bad = accuracy_scores(rng.standard_normal((1200, 8)), {"c": labels})["c"]
    assert bad["nonlinear"] < 0.25 + 0.08 and bad["linear"] < 0.25 + 0.08


def test_discrete_content_run_reports_accuracy_and_fig5_report_and_plot(tmp_path):
    cfg = config.SimConfig(discrete="content", n_classes=3, hidden=(32, 32), batch_size=128, steps=30,
                             eval_samples=300, nonlinear_eval=False, n_cond_draws=500)
    result = training.train(cfg, progress=False)
    c = result["encoder1"]["c"]
    assert c["metric"] == "accuracy" and c["chance"] == pytest.approx(1 / 3) and 0.0 <= c["linear"] <= 1.0
    assert "metric" not in result["encoder1"]["s"]              # continuous blocks keep R^2
    assert "c (accuracy)" in report.format_r2_table(result)
    runs = presets.preset_runs("fig5", seeds=1)
    assert len(runs) == 3 * len(presets.FIG5_CLASSES)
    assert {cfg.steps for _, cfg in runs} == {600_000, 3_000_000}
    rows = [{"config": asdict(cfg), "val_loss": 1.0,
             "summary": {"content": 0.9, "style": 1 / cfg.n_classes, "modality": 0.0}} for _, cfg in runs]
    text = report.report("fig5", rows)
    assert "| discrete | k | chance |" in text and "| style | 3 | 0.33 |" in text
    assert figures.plot_preset("fig5", rows, tmp_path / "fig5.png") and (tmp_path / "fig5.png").stat().st_size > 0


def test_original_setting_without_modality_latents_evaluates_the_blocks_it_has():
    cfg = config.SimConfig(multimodal=False, n_m=0, hidden=(16,), batch_size=64, steps=2,
                             eval_samples=200, nonlinear_eval=False, n_cond_draws=500)
    result = training.train(cfg, progress=False)
    assert set(result["encoder1"]) == {"c", "s", "s_tilde"}
    assert np.isnan(result["summary"]["modality"]) and np.isfinite(result["summary"]["content"])


def test_quick_scale_applies_the_quick_hyperparameters_to_every_run_of_a_preset(tmp_path):
    rows = simulate.main(["--preset", "table4b", "--scale", "quick", "--seeds", "1", "--steps", "3",
                          "--eval-samples", "200", "--nonlinear-eval", "false", "--no-progress",
                          "--out", str(tmp_path)])
    assert len(rows) == 5
    for r in rows:
        c = r["config"]
        assert (tuple(c["hidden"]), c["batch_size"], c["init"], c["lr"]) == ((64, 256, 256, 64), 512, "kaiming", 3e-3)
        assert c["steps"] == 3 and c["n_m"] == 0 and r["steps"] == 3   # explicit flags win
    assert "paper:" in (tmp_path / "report.md").read_text()


def test_quick_scale_figures_run_their_stated_grids():
    fig5 = presets.preset_runs("fig5", seeds=3, scale="quick")
    per_k = {k: sum(1 for _, c in fig5 if c.n_classes == k and c.discrete == "style") for k in (3, 5, 10)}
    assert per_k == {3: 1, 5: 3, 10: 1} and len(fig5) == 3 * 5
    assert {c.steps for _, c in fig5 if c.discrete == "content"} == {2 * presets.QUICK["steps"]}
    assert {c.steps for _, c in fig5 if c.discrete != "content"} == {presets.QUICK["steps"]}
    fig6 = presets.preset_runs("fig6", seeds=1, scale="quick")
    assert sorted((c.n_s, c.n_m) for _, c in fig6) == [(2, 5), (5, 2), (5, 5), (5, 10), (10, 5)]
    assert all(c.batch_size == presets.QUICK["batch_size"] for _, c in fig5 + fig6)
    fig8 = presets.preset_runs("fig8", seeds=3, scale="quick")
    assert len(fig8) == 15 and {c.steps for _, c in fig8} == {presets.QUICK["steps"]} and fig8[0][1].intervention
    with pytest.raises(ValueError, match="scale"):
        presets.preset_runs("fig5", scale="medium")


def test_paper_presets_use_the_authors_estimator_widths_and_evaluation_size():
    assert config.paper_hidden(15) == (150, 750, 750, 750, 750, 150)
    for preset, d in (("table1b", 15), ("table4b", 10), ("table1a", 10)):
        cfg = presets.preset_runs(preset, seeds=1)[0][1]
        assert cfg.loss == "lpsimclr" and cfg.eval_samples == 2 * 20480
        sim = training.Simulation(replace(cfg, n_cond_draws=500))
        assert [m.out_features for m in sim.g1 if isinstance(m, torch.nn.Linear)][:-1] == [10 * d, 50 * d, 50 * d,
                                                                                          50 * d, 50 * d, 10 * d]
    assert presets.preset_runs("fig8", seeds=1)[0][1].steps == 3_000_000
    assert presets.preset_runs("quick")[0][1].loss == "symmetric_infonce"  # the tuned CPU default


def test_statistical_dependence_shares_one_wishart_sigma_across_equal_blocks():
    spec = LatentSpec(n_c=4, n_s=4, n_m=4, statistical=True)
    sampler = LatentSampler(spec, seed=3)
    assert not torch.equal(sampler.chol["c"], torch.eye(4))
    for block in ("s", "m1", "m2"):
        assert torch.equal(sampler.chol[block], sampler.chol["c"])
    assert not torch.equal(LatentSampler(spec, seed=4).chol["c"], sampler.chol["c"])


def test_lpsimclr_training_reduces_its_loss_and_validates_with_it(tmp_path):
    cfg = _tiny(loss="lpsimclr", steps=40, batch_size=128)
    sim = training.Simulation(cfg)
    x1, x2, _ = sim.process.sample(512, _gen(5))
    before = sim.loss(x1, x2, _gen(6)).item()
    for _ in range(cfg.steps):
        sim.step()
    assert sim.loss(x1, x2, _gen(6)).item() < before
    with pytest.raises(ValueError, match="loss must be one of"):
        training.Simulation(_tiny(loss="nce"))


def test_preset_runs_live_in_folders_named_by_label_so_more_seeds_resume(tmp_path):
    for name in ("table1b", "fig6", "fig7"):
        dirs = [presets.run_directory(label) for label, _ in presets.preset_runs(name, seeds=3)]
        assert len(set(dirs)) == len(dirs) and all("/" not in d and " " not in d for d in dirs)
    tiny = dict(hidden=(8,), batch_size=32, steps=4, eval_samples=100, n_cond_draws=200, nonlinear_eval=False,
                n_c=2, n_s=2, n_m=1)
    one = presets.run_preset("table4b", tmp_path, tiny, seeds=1, progress=False)
    two = presets.run_preset("table4b", tmp_path, tiny, seeds=2, progress=False)
    assert len(one) == len(presets.TABLE1_ROWS) and len(two) == 2 * len(presets.TABLE1_ROWS)
    reused = [r for r in two if r["config"]["seed"] == 0]
    assert [r["train_seconds"] for r in reused] == [r["train_seconds"] for r in one]  # not trained again


def test_report_only_summarises_the_finished_runs_without_training(tmp_path, capsys):
    tiny = dict(hidden=(8,), batch_size=32, steps=4, eval_samples=100, n_cond_draws=200, nonlinear_eval=False,
                n_c=2, n_s=2, n_m=1)
    with pytest.raises(SystemExit, match="no finished run"):
        simulate.main(["--preset", "table4b", "--report-only", "--out", str(tmp_path)])
    label, cfg = presets.preset_runs("table4b", seeds=2)[3]       # one run of ten finished
    training.train(replace(cfg, **tiny), tmp_path / presets.run_directory(label), progress=False)
    rows = simulate.main(["--preset", "table4b", "--seeds", "2", "--report-only", "--out", str(tmp_path)])
    assert len(rows) == 1 and "1 of 10 runs finished" in capsys.readouterr().out
    report_md = (tmp_path / "report.md").read_text()
    assert report_md.count("\n") == 3      # header, separator, the one finished setting
    assert len(list(tmp_path.glob("p-*"))) == 1                  # nothing else was trained


def test_fig8_columns_come_from_the_intervened_samples(tmp_path):
    res = training.train(_tiny(steps=4, intervention=True, p_change=0.75, statistical=True), tmp_path,
                         progress=False)
    assert set(res["intervention_encoder2"]) == {"c", "c_prime", "s", "s_tilde", "m1", "m2"}
    # a result whose observational and interventional scores differ: the row takes the latter
    def block(c, s, m):
        return {"c": {"linear": c}, "c_prime": {"linear": 1 - c}, "s": {"linear": s},
                "s_tilde": {"linear": s}, "m1": {"linear": m}, "m2": {"linear": m}}
    result = {"encoder1": block(0.9, 0.8, 0.7), "encoder2": block(0.9, 0.8, 0.7),
              "intervention_encoder1": block(0.1, 0.3, 0.05), "intervention_encoder2": block(0.1, 0.3, 0.05)}
    row = report.summary(result)
    assert (row["content_c"], row["content_c_prime"], row["style"], row["modality"]) == \
        pytest.approx((0.1, 0.9, 0.3, 0.05))
    assert (row["content"], row["style_observational"], row["modality_observational"]) == \
        pytest.approx((0.9, 0.8, 0.7))
    table = report.report("fig8", [{"config": res["config"], "summary": row, "val_loss": 1.0}])
    assert table.splitlines()[0].startswith(
        "| p(chg.) | stat. | caus. | n_s | n_m | enc | seeds | content_c | content_c_prime | style | modality |")
    # the figure: the four intervened columns per setting, beside the paper's values
    rows = [{"config": res["config"], "summary": row, "val_loss": 1.0}]
    assert figures.plot_preset("fig8", rows, tmp_path / "fig8.png") and (tmp_path / "fig8.png").stat().st_size > 0


def test_fig6_plots_r2_and_the_training_loss_curves(tmp_path):
    def row(n_s, n_m, seed):
        return {"config": {"n_s": n_s, "n_m": n_m, "seed": seed},
                "summary": {"content": 0.9, "style": 0.1 * n_s, "modality": 0.0},
                "loss_curve": [[10 * k, 5.0 / k + 0.01 * seed] for k in range(1, 6)]}
    rows = [row(n, 5, s) for n in (1, 5, 9) for s in (0, 1)] + [row(5, n, s) for n in (0, 9) for s in (0, 1)]
    assert figures.plot_preset("fig6", rows, tmp_path / "fig6.png") and (tmp_path / "fig6.png").stat().st_size > 0


def test_fig7_elbow_rule_on_known_curves():
    """The elbow is the smallest size within 5 % of the whole drop of the validation loss."""
    from mmcl_fast.experiments.identifiability.report import fig7_elbow, report

    def rows(losses, n_c=5):
        return [{"config": {"encoding_size": k, "n_c": n_c, "p_change": 0.75, "statistical": False, "causal": False,
                            "n_s": 5, "n_m": 5, "discrete": "", "n_classes": 5},
                 "val_loss": v, "summary": {"content": 0.0, "style": 0.0, "modality": 0.0}}
                for k, v in enumerate(losses, start=1)]
    # drop 4.0 -> 1.0 (3.0): sizes within 0.15 of the minimum are 5.. -> elbow 5, met
    sharp = rows([4.0, 3.2, 2.4, 1.6, 1.1, 1.02, 1.0, 1.0])
    e = fig7_elbow(sharp)
    assert (e["elbow"], e["met"]) == (5, True)
    assert "encoding size 5; n_c = 5: met" in report("fig7", sharp)
    # a curve that keeps falling until 7 misses
    assert fig7_elbow(rows([4.0, 3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 1.0]))["elbow"] == 7
    # seeds are averaged per size before the rule
    two = rows([4.0, 3.0, 2.0, 1.5, 1.0, 1.0]) + rows([4.0, 3.0, 2.0, 1.3, 1.0, 1.0])
    assert fig7_elbow(two)["val_loss"][3] == pytest.approx(1.4)
    with pytest.raises(ValueError, match="two encoding sizes"):
        fig7_elbow(rows([1.0]))
