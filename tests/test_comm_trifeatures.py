"""CoMM's bimodal Trifeatures generator and the torch SimCLR augmentations."""
import numpy as np
import pytest
import torch

from mmcl_fast.experiments.comm import augmentations as aug
from mmcl_fast.experiments.comm import trifeatures as tf


def test_combination_split_is_80_20_and_leaks_nothing():
    train, test = tf.combination_split()
    assert len(train) == 800 and len(test) == 200
    assert not {tuple(r) for r in train} & {tuple(r) for r in test}
    assert len({tuple(r) for r in np.concatenate([train, test])}) == 1000
    again, _ = tf.combination_split()
    assert np.array_equal(train, again)  # seed 42, reproducible


@pytest.fixture(scope="module")
def test_split():
    return tf.render_split("test", seed=0)


def test_rendered_images_and_attribute_ranges(test_split):
    d = test_split
    assert d.images.shape == (200, 3, 64, 64) and d.images.dtype == np.float32
    assert d.images.min() >= 0 and d.images.max() <= 1
    for attr in (d.shape, d.texture, d.colour):
        assert attr.min() >= 0 and attr.max() <= 9
    _, test = tf.combination_split()
    assert np.array_equal(np.stack([d.shape, d.texture, d.colour], 1), test)  # one rendering each
    # the object is drawn: some pixels differ from the grey background, and every pixel is the
    # area average of grey and the combination's colour: grey + alpha (colour - grey), one alpha
    # in [0, 1] for the three channels
    for k in range(0, 200, 37):
        img = d.images[k].astype(np.float64)
        colour = np.asarray(tf.COLOURS[tf.COLOUR_NAMES[d.colour[k]]])
        c = int(np.argmax(np.abs(colour - tf.GREY)))
        alpha = (img[c] - tf.GREY) / (colour[c] - tf.GREY)
        assert alpha.min() >= -1e-6 and alpha.max() <= 1 + 1e-6
        assert np.allclose(img, tf.GREY + alpha[None] * (colour - tf.GREY)[:, None, None], atol=1e-5), k
        assert (alpha > 0.99).sum() > 20 and ((alpha > 0.01) & (alpha < 0.99)).any(), k  # anti-aliased edges


def test_the_direct_renderer_draws_only_grey_and_the_colour():
    rng = np.random.default_rng(1)
    for k in range(0, 10, 3):
        img = tf.render(k, k, k, rng, rendering="direct")
        on = np.abs(img - tf.GREY).sum(2) > 1e-6
        assert on.sum() > 20
        assert np.allclose(img[on], np.asarray(tf.COLOURS[tf.COLOUR_NAMES[k]], dtype=np.float32), atol=1e-6)
    with pytest.raises(ValueError, match="rendering"):
        tf.render(0, 0, 0, rng, rendering="fancy")


def test_textures_are_rotated_within_45_degrees_and_strokes_are_two_pixels_wide():
    # stripes at one period, every stroke >= 2 pixels: a full-canvas row of the fine grid crosses
    # runs of on-samples no shorter than STROKE pixels (up to the rotation's stretch, >= 1)
    n = 64 * tf.SUPERSAMPLE
    y, x = (np.mgrid[0:n, 0:n].astype(np.float64) + 0.5) / tf.SUPERSAMPLE
    for name in ("stripes", "grid", "rain", "pluses", "noise"):
        on = tf.texture_pattern(name, x, y, tf.TEXTURE_PERIOD[name], np.random.default_rng(0), tf.STROKE)
        row = on[n // 2].astype(int)
        edges = np.flatnonzero(np.diff(row))
        runs = np.diff(edges)[row[edges[:-1] + 1] == 1] / tf.SUPERSAMPLE
        assert runs.size and runs.min() >= tf.STROKE - 1e-9, (name, runs.min())


def test_every_shape_and_texture_renders_distinctly():
    rng = np.random.default_rng(3)
    masks = {}
    for s in range(10):  # solid texture: the mask alone
        img = tf.render(s, 0, 9, rng)
        masks[s] = (np.abs(img - tf.GREY) > 0.5 * np.abs(np.asarray(tf.COLOURS["white"]) - tf.GREY)).any(2)
        assert 150 < masks[s].sum() < 64 * 64 / 2, tf.SHAPES[s]
    fill = [tf.render(0, t, 9, np.random.default_rng(5))[..., 0] > (1 + tf.GREY) / 2 for t in range(10)]
    rates = [f.sum() / masks[0].sum() for f in fill]
    assert rates[0] == pytest.approx(1.0, abs=0.05)  # solid fills the shape
    assert all(0.05 < r < 0.95 for r in rates[1:]), rates  # every other texture is a pattern


def test_pairs_share_the_shape_and_the_synergy_map_is_consistent(test_split):
    d = test_split
    m = tf.synergy_map()
    assert sorted(m) == list(range(10)) and np.array_equal(m, tf.synergy_map())
    rng = np.random.default_rng(0)
    pairs = tf.same_shape_pairs(d, rng)
    assert len(pairs) == len(d)
    assert (d.shape[pairs[:, 0]] == d.shape[pairs[:, 1]]).all() and (pairs[:, 0] != pairs[:, 1]).all()
    labels = tf.pair_labels(d, pairs, m)
    assert np.array_equal(labels["R"], d.shape[pairs[:, 0]])
    assert 0.0 <= labels["S"].mean() < 0.3  # unbiased pairs: about 1 in 10 is in M
    train = tf.render_split("train", seed=0, rendering="direct")  # the pairs depend on the attributes only
    biased = tf.same_shape_pairs(train, rng, biased=True, m=m)
    assert len(biased) > 0.95 * len(train)
    assert tf.pair_labels(train, biased, m)["S"].all()  # the pre-training pairs are all in M
    probe = tf.synergy_probe_pairs(train, rng, m)
    s = tf.pair_labels(train, probe, m)["S"]
    assert abs(s.mean() - 0.5) < 0.05 and (train.shape[probe[:, 0]] == train.shape[probe[:, 1]]).all()


def test_render_split_refuses_an_unknown_split_and_returns_independent_copies(test_split):
    with pytest.raises(ValueError, match="split"):
        tf.render_split("val")
    with pytest.raises(ValueError, match="rendering"):
        tf.render_split("test", rendering="3d")
    mine = tf.render_split("test", seed=0)
    mine.images[:] = 0
    mine.shape[:] = -1
    again = tf.render_split("test", seed=0)
    assert np.array_equal(again.images, test_split.images) and np.array_equal(again.shape, test_split.shape)


def _images(seed=0, n=6):
    rng = np.random.default_rng(seed)
    imgs = np.stack([tf.render(k % 10, k % 10, k % 10, rng) for k in range(n)])
    return torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy())


def test_augmentations_keep_shape_range_and_are_reproducible():
    x = _images()
    a = aug.SimCLRAugment()(x, torch.Generator().manual_seed(1))
    b = aug.SimCLRAugment()(x, torch.Generator().manual_seed(1))
    c = aug.SimCLRAugment()(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_each_augmentation_does_what_it_says():
    x = _images()
    g = torch.Generator().manual_seed(0)
    full = aug.random_resized_crop(x, g, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(full, x, atol=1e-5)  # the whole image, resampled onto itself
    grey = aug.greyscale(x)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    flat = torch.full((2, 3, 16, 16), 0.3)
    assert torch.allclose(aug.gaussian_blur(flat, torch.tensor([0.5, 2.0])), flat, atol=1e-6)
    blurred = aug.gaussian_blur(x, torch.full((len(x),), 2.0))
    assert blurred.var() < x.var()  # smoothing lowers the pixel variance
    none = aug.colour_jitter(x, g, brightness=0, contrast=0, saturation=0, hue=0)
    assert torch.allclose(none, x, atol=1e-5)
    with pytest.raises(ValueError, match="images must be a float"):
        aug.greyscale(torch.zeros(2, 1, 8, 8))


def _stripes(period: float, n: int = 64) -> torch.Tensor:
    """A full-canvas stripes texture of the renderer, white on grey, as one (1, 3, n, n) image."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) + 0.5
    on = tf.texture_pattern("stripes", x, y, period, np.random.default_rng(0))
    img = np.repeat(np.where(on[..., None], 1.0, tf.GREY), 3, axis=2).astype(np.float32)
    return torch.from_numpy(img.transpose(2, 0, 1).copy())[None]


def _contrast_kept(img: torch.Tensor, sigma: float) -> float:
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))  # away from the replicated edges
    return float(aug.gaussian_blur(img, torch.tensor([sigma]))[inner].std() / img[inner].std())


def test_the_strongest_blur_keeps_textures_as_the_authors_blur_keeps_theirs():
    # The authors: sigma up to 2 px on a 10-px period at 224 x 224. Here: the training blur's
    # strongest sigma on this renderer's mean period (6 px) keeps a comparable share of contrast,
    # where an unscaled 2-px sigma erases most of it.
    from mmcl_fast.experiments.comm.config import CommConfig
    from mmcl_fast.experiments.comm.training import CommRun

    theirs = _contrast_kept(_stripes(tf.AUTHORS_TEXTURE_PERIOD), 2.0)
    strongest = CommRun.blur_sigma(CommConfig())[1]
    mean_period = float(np.mean(list(tf.TEXTURE_PERIOD.values())))
    assert tf.BLUR_SCALE == pytest.approx(mean_period / tf.AUTHORS_TEXTURE_PERIOD, abs=1e-3)
    for period in (round(mean_period),):
        ours = _contrast_kept(_stripes(period), strongest)
        assert ours >= 0.75 * theirs, (period, ours, theirs)
        assert _contrast_kept(_stripes(period), 2.0) < 0.5 * theirs


def test_raw_pixel_control_refuses_bad_arguments():
    from mmcl_fast.experiments.comm.raw_pixels import raw_pixel_scores

    with pytest.raises(ValueError, match="components"):
        raw_pixel_scores("supersampled", components=0)


@pytest.mark.slow
def test_raw_pixels_give_away_colour_but_not_texture():
    from mmcl_fast.experiments.comm.raw_pixels import raw_pixel_scores

    s = raw_pixel_scores("direct", components=32)
    assert s["colour"] > 0.8 and s["texture"] < 0.3, s  # 10 classes: chance 0.1
