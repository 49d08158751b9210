"""Procedural Multimodal3DIdent generator, ResNet-18 and the image/text trainer."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import colors as mcolors

from mmcl_fast.experiments.common.checkpoint import CheckpointMismatch, save_checkpoint
from mmcl_fast.experiments.common.lr_schedule import learning_rate
from mmcl_fast.experiments.imagetext import procedural_m3di as m3di
from mmcl_fast.experiments.imagetext import training as training_module
from mmcl_fast.experiments.imagetext.config import ImageTextConfig
from mmcl_fast.experiments.imagetext.encoders import TextConvNet2D, TextEncoder
from mmcl_fast.experiments.imagetext.evaluation import evaluate_factors
from mmcl_fast.experiments.imagetext.resnet import ResNet18
from mmcl_fast.experiments.imagetext.train_imagetext import build_parser, config_from_args, main
from mmcl_fast.experiments.imagetext.training import ImageTextRun, train


def test_generator_is_deterministic_and_seeded():
    a, b = m3di.generate_split(40, seed=3, image_size=32), m3di.generate_split(40, seed=3, image_size=32)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    c = m3di.generate_split(40, seed=4, image_size=32)
    assert not np.array_equal(a.images, c.images)
    assert a.images.dtype == np.uint8 and a.images.shape == (40, 32, 32, 3)


@pytest.mark.parametrize("causal", [False, True])
def test_factor_ranges(causal):
    f = m3di.sample_latents(5000, np.random.default_rng(0), causal)
    assert set(np.unique(f["shape"])) == set(range(7))
    assert set(np.unique(f["x"])) == set(np.unique(f["y"])) == {0, 1, 2}
    assert set(np.unique(f["phrasing"])) == set(range(5))
    for k in m3di.CONTINUOUS:
        assert f[k].min() >= 0 and f[k].max() < 1 and 0.4 < f[k].mean() < 0.6
    third = np.floor(f["object_hue"] * 3)
    if causal:                                  # hue drawn from the third tied to x
        assert np.array_equal(third, f["x"])
    else:                                       # independent: every third at every x
        assert {(int(t), int(x)) for t, x in zip(third, f["x"])} == {(t, x) for t in range(3) for x in range(3)}


def test_captions_state_their_factors():
    s = m3di.generate_split(300, seed=1, image_size=32)
    palettes = {0: mcolors.TABLEAU_COLORS, 1: mcolors.CSS4_COLORS, 2: mcolors.XKCD_COLORS}
    for i, text in enumerate(s.captions):
        p = m3di.parse_caption(text)
        for k in ("shape", "x", "y", "phrasing"):
            assert p[k] == s.factors[k][i], (text, k)
        # the colour word is the nearest RGB neighbour in the sample's palette
        table = palettes[int(s.factors["palette"][i])]
        rgb = m3di.hue_to_rgb(np.array(s.factors["object_hue"][i]))
        best = min(table, key=lambda n: float(((np.array(mcolors.to_rgb(table[n])) - rgb) ** 2).sum()))
        assert p["color"].split(":")[-1] == best.split(":")[-1].replace(" ", "_"), text
    with pytest.raises(ValueError, match="not a caption"):
        m3di.parse_caption("a purple cow jumps")


def test_rendered_object_sits_at_its_grid_position():
    """Pixels unchanged by a new background hue are the object's; their centroid is in the
    stated third of the image."""
    rng = np.random.default_rng(5)
    f = m3di.sample_latents(30, rng)
    for i in range(30):
        one = {k: v[i] for k, v in f.items()}
        a = m3di.render_image(one, 64).astype(int)
        b = m3di.render_image({**one, "background_hue": (one["background_hue"] + 0.5) % 1}, 64).astype(int)
        ys, xs = np.nonzero((np.abs(a - b).sum(-1) == 0))
        assert 15 < len(xs) < 900, one
        assert int(xs.mean() // (64 / 3)) == one["x"] and int(ys.mean() // (64 / 3)) == one["y"]


def test_silhouette_stands_out_on_a_background_of_its_own_hue():
    """Object hue == background hue: every object pixel on the silhouette is brighter (HSV value)
    than its outside 4-neighbour, so shape is visible whatever the two hues."""
    f = m3di.sample_latents(40, np.random.default_rng(11))
    for i in range(40):
        one = {**{k: v[i] for k, v in f.items()}, "background_hue": f["object_hue"][i]}
        a = m3di.render_image(one, 64).astype(int)
        b = m3di.render_image({**one, "background_hue": (one["background_hue"] + 0.5) % 1}, 64).astype(int)
        obj, value = (np.abs(a - b).sum(-1) == 0), a.max(-1)
        for shift in ((0, 1), (1, 0), (0, -1), (-1, 0)):      # the object never meets the border
            edge = obj & ~np.roll(obj, shift, (0, 1))
            assert edge.any() and (value[edge] > np.roll(value, shift, (0, 1))[edge]).all(), one


def test_vocabulary_unknown_and_padding():
    v = m3di.Vocabulary(["a red square", "the blue ring"])
    ids = v.encode(["a green square", "ring"], 5)
    assert ids.shape == (2, 5) and ids[0, 1] == 1 and ids[0, 0] == v.index["a"]
    assert (ids[1, 1:] == 0).all()


def test_cache_round_trip(tmp_path):
    path = tmp_path / "d.npz"
    a = m3di.load_or_generate(path, 20, 2, 32, True, progress=False)
    b = m3di.load_or_generate(path, 20, 2, 32, True, progress=False)
    assert path.exists() and np.array_equal(a.images, b.images) and a.captions == b.captions
    assert all(np.array_equal(a.factors[k], b.factors[k]) for k in a.factors)
    with pytest.raises(ValueError, match="image_size"):
        m3di.generate_split(4, 0, image_size=16)


def test_resnet18_shapes_and_parameter_count():
    m = ResNet18(1000)
    assert sum(p.numel() for p in m.parameters()) == 11_689_512       # torchvision's resnet18
    m.eval()
    for size in (32, 64, 224):
        assert m(torch.randn(2, 3, size, size)).shape == (2, 1000)
        assert m.features(torch.randn(1, 3, size, size)).shape == (1, 512)
    with pytest.raises(ValueError, match="images"):
        m(torch.randn(2, 1, 32, 32))


def test_text_encoder_ignores_padding():
    enc = TextEncoder(20, 4)
    t = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    out = enc(t)
    assert out.shape == (1, 4) and torch.isfinite(out).all()


SMALL = dict(image_size=32, n_train=64, n_val=32, n_test=64, batch_size=8, encoding_size=3,
             checkpoint_every=10)


@pytest.mark.slow
def test_training_smoke_and_exact_resume(tmp_path):
    cfg = ImageTextConfig(steps=20, lr_schedule="cosine", **SMALL)
    res = train(cfg, tmp_path / "a", progress=False)
    assert json.loads((tmp_path / "a" / "results.json").read_text())["config"]["steps"] == 20
    assert (tmp_path / "a" / "samples.png").stat().st_size > 0
    assert np.isfinite(res["val_loss"])
    assert set(res["scores"]["image"]) == {"shape", "x", "y", "object_hue", "rotation",
                                           "spot_pos", "spot_hue", "background_hue"}
    assert set(res["scores"]["text"]) == {"shape", "x", "y", "object_color_index", "phrasing", "object_hue"}
    # interrupted after 10 steps, resumed: the same parameters as the straight run
    run = ImageTextRun(cfg, tmp_path / "b")
    for _ in range(10):
        run.step()
    save_checkpoint(run, tmp_path / "b" / "checkpoint.pt")
    train(cfg, tmp_path / "b", progress=False)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert b["step"] == 20
    for k, v in a["state"]["image_encoder"].items():
        assert torch.equal(v, b["state"]["image_encoder"][k]), k
    # another configuration's checkpoint is refused, naming the field; free fields may change
    with pytest.raises(CheckpointMismatch, match=r"temperature: 0.1 in the checkpoint, 0.5 now"):
        train(ImageTextConfig(steps=20, lr_schedule="cosine", **{**SMALL, "temperature": 0.5}),
              tmp_path / "b", progress=False)
    (tmp_path / "b" / "results.json").unlink()  # resume from the checkpoint, not the finished run
    again = train(ImageTextConfig(steps=20, lr_schedule="cosine", **{**SMALL, "checkpoint_every": 7}),
                  tmp_path / "b", progress=False)
    assert again["seconds"]["train"] < 5   # resumed at step 20: nothing left to train


@pytest.mark.slow
def test_finished_run_is_reused_not_retrained(tmp_path, monkeypatch):
    """A sweep re-run after an interruption: a results.json of the same configuration (bookkeeping
    fields aside) is returned without building a run; another configuration trains."""
    cfg = ImageTextConfig(steps=2, **SMALL)
    first = train(cfg, tmp_path, progress=False)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(training_module, "ImageTextRun", no_training)
    again = train(replace(cfg, threads=1, checkpoint_every=5, data_dir=str(tmp_path / "elsewhere")),
                  tmp_path, progress=False)
    assert again == first
    with pytest.raises(AssertionError, match="trained again"):
        train(replace(cfg, temperature=0.5), tmp_path, progress=False)


@pytest.mark.slow
def test_cli_sweep_and_nt_xent(tmp_path):
    out = main(["--steps", "3", "--encoding-sizes", "2", "3", "--loss", "nt_xent",
                "--image-size", "32", "--n-train", "64", "--n-val", "32", "--n-test", "40",
                "--batch-size", "8", "--out", str(tmp_path), "--quiet"])
    assert set(out["runs"]) == {2, 3}
    assert (tmp_path / "sweep.png").stat().st_size > 0 and (tmp_path / "sweep.json").exists()


@pytest.mark.slow
def test_seeds_are_summarised_as_mean_and_sd(tmp_path):
    out = main(["--steps", "2", "--seeds", "2", "--seed", "5", "--image-size", "32", "--n-train", "64",
                "--n-val", "32", "--n-test", "40", "--batch-size", "8", "--out", str(tmp_path), "--quiet"])
    assert [r["config"]["seed"] for r in out["runs"]] == [5, 6]
    assert (tmp_path / "seed5" / "results.json").exists() and (tmp_path / "seed6" / "results.json").exists()
    shape = [r["scores"]["image"]["shape"]["score"] for r in out["runs"]]
    entry = out["summary"]["scores"]["image"]["shape"]["score"]
    assert entry["mean"] == pytest.approx(np.mean(shape)) and entry["sd"] == pytest.approx(np.std(shape, ddof=1))
    assert "± " in (tmp_path / "summary.md").read_text()
    with pytest.raises(ValueError, match="seeds"):
        main(["--seeds", "0", "--out", str(tmp_path / "x"), "--quiet"])
    with pytest.raises(ValueError, match="loss"):
        ImageTextRun(ImageTextConfig(loss="mse", **SMALL), tmp_path / "c")


@pytest.mark.slow
def test_evaluation_detects_encoded_factors():
    """A code that holds shape and x (and noise) scores high on those, near chance elsewhere."""
    rng = np.random.default_rng(0)
    f = m3di.sample_latents(600, rng)
    z = np.stack([f["shape"] + 0.05 * rng.standard_normal(600),
                  f["x"] + 0.05 * rng.standard_normal(600), rng.standard_normal(600)], 1)
    for n_fit in (None, 400):        # halves, or the paper's protocol (fit on "val" = first 400)
        res = evaluate_factors(z, z, f, n_fit=n_fit)
        assert res["image"]["shape"]["score"] > 0.9 and res["image"]["x"]["score"] > 0.9
        assert res["image"]["x"]["linear"] > 0.9       # x is linear in the code: logistic regression too
        assert res["image"]["y"]["score"] < 0.5 and abs(res["image"]["rotation"]["score"]) < 0.1
        assert abs(res["image"]["rotation"]["circular"]) < 0.1
        # the original's discrete text colour: the caption's colour name, not encoded here
        colour = res["text"]["object_color_index"]
        assert colour["metric"] == "accuracy" and colour["score"] < colour["chance"] + 0.1
    # the probe only sees [0, n_fit): labels after it that contradict the code are scored as wrong
    flipped = dict(f, shape=np.concatenate([f["shape"][:400], (f["shape"][400:] + 1) % 7]))
    assert evaluate_factors(z, z, flipped, n_fit=400)["image"]["shape"]["score"] < 0.1
    with pytest.raises(ValueError, match="n_fit"):
        evaluate_factors(z, z, f, n_fit=598)


def test_learning_rate_schedules_and_bad_schedule(tmp_path):
    assert learning_rate("constant", 0.1, 7, 10) == 0.1
    assert learning_rate("cosine", 0.1, 0, 10) == pytest.approx(0.1)
    assert learning_rate("cosine", 0.1, 5, 10) == pytest.approx(0.05)
    assert learning_rate("cosine", 0.1, 10, 10) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate("cosine", 0.1, 12, 10) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate("linear", 0.1, 0, 10)
    with pytest.raises(ValueError, match="lr_schedule"):
        ImageTextRun(ImageTextConfig(lr_schedule="step", **SMALL), tmp_path)


def test_learning_rate_warmup(tmp_path):
    # linear ramp (step + 1) / warmup times the schedule, then the schedule alone
    assert learning_rate("constant", 0.1, 0, 100, warmup=4) == pytest.approx(0.025)
    assert learning_rate("constant", 0.1, 2, 100, warmup=4) == pytest.approx(0.075)
    assert learning_rate("constant", 0.1, 3, 100, warmup=4) == pytest.approx(0.1)
    cos = learning_rate("cosine", 0.1, 1, 10)
    assert learning_rate("cosine", 0.1, 1, 10, warmup=4) == pytest.approx(cos / 2)
    assert learning_rate("cosine", 0.1, 6, 10, warmup=4) == learning_rate("cosine", 0.1, 6, 10)
    with pytest.raises(ValueError, match="warmup"):
        learning_rate("constant", 0.1, 0, 10, warmup=-1)
    with pytest.raises(ValueError, match="warmup"):
        ImageTextRun(ImageTextConfig(warmup_steps=-5, **SMALL), tmp_path)


def test_zero_init_residual_blocks_start_as_their_shortcut():
    torch.manual_seed(0)
    plain, zero = ResNet18(10), ResNet18(10, zero_init_residual=True)
    x = torch.randn(3, 64, 8, 8).relu() + 0.1             # a post-ReLU input of the first stage
    for block in zero.layer1:                              # identity shortcut: the block is relu(x) = x
        torch.testing.assert_close(block(x), x)
    assert not torch.allclose(plain.layer1[0](x), x)
    assert all(not b.bn2.weight.detach().any() for layer in (zero.layer2, zero.layer3, zero.layer4)
               for b in layer)
    # downsampling blocks still carry the signal through their projection shortcut
    assert zero(torch.randn(2, 3, 32, 32)).std() > 0


@pytest.mark.slow
def test_colour_index_is_the_captions_colour_name_and_follows_x_when_causal():
    split = m3di.generate_split(60, seed=3, image_size=32, causal=True)
    vocab = m3di.color_vocabulary()
    idx = m3di.color_indices(split.factors["object_hue"], split.factors["palette"])
    assert [vocab[k] for k in idx] == [m3di.parse_caption(c)["color"] for c in split.captions]
    # causal data: the hue, hence the colour name, is tied to the x-position, and a code holding
    # the hue predicts the colour name above its majority rate
    rng = np.random.default_rng(1)
    f = m3di.sample_latents(600, rng, causal=True)
    z = np.stack([np.cos(2 * np.pi * f["object_hue"]), np.sin(2 * np.pi * f["object_hue"]),
                  rng.standard_normal(600)], 1)
    res = evaluate_factors(z, z, f)
    assert res["text"]["object_color_index"]["score"] > res["text"]["object_color_index"]["chance"] + 0.1
    assert res["image"]["object_hue"]["circular"] > 0.9 and res["text"]["object_hue"]["score"] > 0.5


def test_original_text_convnet_layout_and_bad_lengths():
    enc = TextConvNet2D(30, 5, sequence_length=24)
    assert enc.head.in_features == 100 * 3 * 16          # the original's flattened size at 24 tokens
    assert enc(torch.randint(0, 30, (4, 24))).shape == (4, 5)
    with pytest.raises(ValueError, match="24 tokens"):
        enc(torch.randint(0, 30, (4, 12)))
    with pytest.raises(ValueError, match="sequence_length"):
        TextConvNet2D(30, 5, sequence_length=4)
    with pytest.raises(ValueError, match="text_encoder"):
        ImageTextRun(ImageTextConfig(text_encoder="lstm", **SMALL), Path("/nonexistent"))


def test_presets_and_flags_override_them():
    quick = config_from_args(build_parser().parse_args([]))
    assert quick.causal and quick.text_encoder == "conv2d" and quick.steps == 800
    paper = config_from_args(build_parser().parse_args(["--preset", "paper"]))
    assert (paper.loss, paper.temperature, paper.batch_size, paper.lr, paper.steps) == \
        ("nt_xent", 1.0, 256, 1e-5, 100_000)
    assert (paper.n_train, paper.n_val, paper.n_test, paper.lr_schedule) == (125_000, 10_000, 10_000, "constant")
    assert config_from_args(build_parser().parse_args(["--preset", "paper", "--steps", "7"])).steps == 7


def test_summary_statistics_of_known_scores():
    from mmcl_fast.experiments.imagetext.report import summarize
    runs = [{"val_loss": v, "scores": {"image": {"shape": {"role": "content", "metric": "accuracy",
                                                           "score": s, "linear": s / 2}}}}
            for v, s in ((1.0, 0.2), (2.0, 0.4), (3.0, 0.9))]
    summ = summarize(runs)
    assert summ["n"] == 3 and summ["val_loss"] == {"mean": 2.0, "sd": 1.0}
    shape = summ["scores"]["image"]["shape"]
    assert shape["score"]["mean"] == pytest.approx(0.5) and shape["score"]["sd"] == pytest.approx(0.3605551)
    assert shape["linear"]["mean"] == pytest.approx(0.25) and "circular" not in shape
