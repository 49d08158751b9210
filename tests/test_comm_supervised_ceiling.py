"""The supervised ceiling of the CoMM image encoder (comm.supervised_ceiling)."""
import numpy as np
import pytest

from mmcl_fast.experiments.comm import supervised_ceiling as sc
from mmcl_fast.experiments.comm.trifeatures import TrifeaturesImages, render


def _images(n: int, seed: int) -> TrifeaturesImages:
    rng = np.random.default_rng(seed)
    rows = np.stack([rng.integers(0, 10, n), rng.integers(0, 10, n), np.arange(n) % 4], 1)
    imgs = np.stack([render(int(s), int(t), int(c), rng) for s, t, c in rows]).transpose(0, 3, 1, 2)
    return TrifeaturesImages(np.ascontiguousarray(imgs), rows[:, 0].copy(), rows[:, 1].copy(), rows[:, 2].copy())


def test_a_labelled_encoder_learns_the_easy_attribute_and_reports_test_scores():
    train, test = _images(96, 0), _images(48, 1)
    res = sc.supervised_ceiling(train, test, steps=60, batch_size=32, augment="none", width=16,
                                lr=3e-3, attributes=("colour",))
    assert set(res["head"]) == set(res["probe"]) == {"colour"}
    # four colours, chance 0.25: the trained head and the probe on its pooled tokens separate them
    assert res["head"]["colour"] > 0.6 and res["probe"]["colour"] > 0.6, res
    assert res["n_train"] == 96 and res["n_test"] == 48 and res["final_loss"] < 2.0  # chance: ln 10


def test_supervised_ceiling_refuses_bad_arguments():
    data = _images(8, 0)
    with pytest.raises(ValueError, match="augment"):
        sc.supervised_ceiling(data, data, augment="strong")
    with pytest.raises(ValueError, match="steps"):
        sc.supervised_ceiling(data, data, steps=0)
    with pytest.raises(ValueError, match="attributes"):
        sc.supervised_ceiling(data, data, attributes=("size",))
    with pytest.raises(ValueError, match="attributes"):
        sc.supervised_ceiling(data, data, attributes=())


def test_batch_norm_recalibration_gives_the_plain_statistics_of_the_images():
    import torch

    torch.manual_seed(0)
    model = sc.LabelledEncoder(16, ("shape",))
    bn = model.encoder.net[1]
    bn.running_mean.fill_(5.0)
    images = torch.rand(300, 3, 64, 64)
    sc.recalibrate_batch_norm(model.encoder, images, size=128)
    with torch.no_grad():
        pre = model.encoder.net[0](images).double()          # the first BatchNorm's input
    # the cumulative average weights each batch (128, 128, 44 images) equally
    mean = torch.stack([pre[k:k + 128].mean((0, 2, 3)) for k in (0, 128, 256)]).mean(0)
    assert torch.allclose(bn.running_mean.double(), mean, rtol=1e-4, atol=1e-5)
    # and so the batches' unbiased variances
    var = torch.stack([pre[k:k + 128].var((0, 2, 3), unbiased=True) for k in (0, 128, 256)]).mean(0)
    assert torch.allclose(bn.running_var.double(), var, rtol=1e-4)
    assert bn.momentum == 0.1 and not model.encoder.training
