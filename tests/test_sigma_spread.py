"""The per-Σ analysis of a statistical-dependence row (identifiability.sigma_spread)."""
import itertools
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmcl_fast.experiments.identifiability import sigma_spread
from mmcl_fast.experiments.identifiability.config import SimConfig
from mmcl_fast.experiments.identifiability.sigma_spread import least_changed_fraction, load_runs, spread, style_sigma
from mmcl_fast.experiments.identifiability.sim_data import LatentSampler

STAT_ROW = replace(SimConfig(), n_m=0, p_change=0.75, statistical=True, steps=20)


def _changed_fraction_reference(sigma: np.ndarray, p: float) -> float:
    """float64: the smallest generalised eigenvalue of (Cov(M eps), Sigma), Cov(M eps) = E[M Sigma M]."""
    cov_change = p * p * sigma + p * (1 - p) * np.diag(np.diag(sigma))
    return float(scipy.linalg.eigh(cov_change, sigma, eigvals_only=True)[0])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 7), p=st.floats(0.05, 1.0), seed=st.integers(0, 2 ** 31 - 1))
def test_least_changed_fraction_matches_the_generalised_eigenproblem(n, p, seed):
    g = np.random.default_rng(seed).standard_normal((n + 2, n))
    sigma = g.T @ g + 1e-3 * np.eye(n)
    ref = _changed_fraction_reference(sigma, p)
    assert abs(least_changed_fraction(sigma, p) - ref) <= 1e-9 * ref


def test_least_changed_fraction_is_p_for_independent_style_and_matches_sampling():
    assert least_changed_fraction(np.eye(5), 0.75) == pytest.approx(0.75, rel=1e-12)
    sigma = np.array([[1.0, 0.9], [0.9, 1.0]])
    p = 0.75
    frac = least_changed_fraction(sigma, p)
    assert frac == pytest.approx(p * p + p * (1 - p) / 1.9, rel=1e-12)
    # Monte Carlo: along the minimising direction the change replaces that fraction of the variance
    rng = np.random.default_rng(0)
    cov_change = p * p * sigma + p * (1 - p) * np.diag(np.diag(sigma))
    v = scipy.linalg.eigh(cov_change, sigma)[1][:, 0]
    s = rng.multivariate_normal(np.zeros(2), sigma, 400_000)
    change = (rng.random((400_000, 2)) < p) * rng.multivariate_normal(np.zeros(2), sigma, 400_000)
    assert np.var(change @ v) / np.var(s @ v) == pytest.approx(frac, rel=0.02)


def test_least_changed_fraction_refuses_bad_arguments():
    with pytest.raises(ValueError, match="sigma"):
        least_changed_fraction(np.ones((2, 3)), 0.5)
    with pytest.raises(ValueError, match="sigma"):
        least_changed_fraction(np.diag([1.0, 0.0]), 0.5)
    with pytest.raises(ValueError, match="p_change"):
        least_changed_fraction(np.eye(2), 1.5)


def test_style_sigma_is_the_samplers_covariance():
    cfg = replace(STAT_ROW, seed=4)
    sigma = style_sigma(asdict(cfg))
    s = LatentSampler(cfg.spec(), seed=4).sample(200_000, torch.Generator().manual_seed(0))["s"].double().numpy()
    assert np.abs(np.cov(s.T) - sigma).max() <= 0.03 * np.abs(sigma).max()
    assert not np.allclose(sigma, style_sigma(asdict(replace(cfg, seed=5))))


def _write_run(folder, cfg: SimConfig, style: float, content: float = 0.98):
    folder.mkdir(parents=True)
    result = {"config": json.loads(json.dumps(asdict(cfg))), "train_seconds": 1.0,
              "summary": {"content": content, "style": style, "modality": float("nan")}}
    (folder / "results.json").write_text(json.dumps(result))
    return folder


def test_spread_over_seeds_and_its_three_seed_means(tmp_path):
    styles = [0.7, 0.6, 0.5, 0.4, 0.3]
    folders = [_write_run(tmp_path / f"s{k}", replace(STAT_ROW, seed=k), v) for k, v in enumerate(styles)]
    s = spread(load_runs(folders), "table4b")
    assert [r["seed"] for r in s["per_seed"]] == list(range(5))
    assert s["style"]["mean"] == pytest.approx(0.5) and s["style"]["sd"] == pytest.approx(np.std(styles, ddof=1))
    g = s["group_means"]
    assert g["count"] == 10 and g["min"] == pytest.approx(0.4) and g["max"] == pytest.approx(0.6)
    assert g["seeds_below_group_mean"] == pytest.approx(0.6)
    assert g["share_at_or_above_seeds_below_group"] == pytest.approx(0.1)
    # paper Table 4 (b), this row: 0.36 ± 0.10, band max(0.10, 0.20): means 0.4 .. 0.56 pass, 0.5667 .. 0.6 fail
    band = max(0.10, 2 * s["paper"]["style_sd"])
    expect = np.mean([abs(np.mean(c) - s["paper"]["style_r2"]) <= band for c in itertools.combinations(styles, 3)])
    assert g["share_meeting_style_target"] == pytest.approx(expect) and 0 < expect < 1
    assert s["per_seed"][0]["least_changed"] == pytest.approx(
        least_changed_fraction(style_sigma(asdict(replace(STAT_ROW, seed=0))), 0.75))
    assert "style" in s["targets_met_all_seeds"]


def test_load_runs_refuses_mixed_rows_and_repeated_seeds(tmp_path):
    a = _write_run(tmp_path / "a", replace(STAT_ROW, seed=0), 0.5)
    b = _write_run(tmp_path / "b", replace(STAT_ROW, seed=1, causal=True), 0.5)
    with pytest.raises(ValueError, match="more than the seed"):
        load_runs([a, b])
    c = _write_run(tmp_path / "c", replace(STAT_ROW, seed=0, eval_samples=8000), 0.5)
    with pytest.raises(ValueError, match="occurs twice"):
        load_runs([a, c])
    d = _write_run(tmp_path / "d", replace(STAT_ROW, seed=0, statistical=False), 0.5)
    with pytest.raises(ValueError, match="no statistical dependence"):
        load_runs([d])
    with pytest.raises(ValueError, match="no results.json"):
        load_runs([tmp_path / "missing"])
    e = _write_run(tmp_path / "e", replace(STAT_ROW, seed=2, p_change=0.5), 0.5)
    with pytest.raises(ValueError, match="has no row"):
        spread(load_runs([e]), "table4b", group=1)
    with pytest.raises(ValueError, match="at least 3 seeds"):
        spread(load_runs([a]), "table4b")


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    folders = [str(_write_run(tmp_path / f"s{k}", replace(STAT_ROW, seed=k), 0.4 + 0.05 * k)) for k in range(4)]
    sigma_spread.main([*folders, "--table", "table4b", "--out", str(tmp_path / "out")])
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["seeds"] == 4 and (tmp_path / "out.md").read_text().startswith("table4b")
    assert "4 seeds" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="differs"):
        other = _write_run(tmp_path / "x", replace(STAT_ROW, seed=9, lr=0.5), 0.4)
        sigma_spread.main([folders[0], str(other), "--table", "table4b", "--out", str(tmp_path / "o2")])
