"""The shared checkpoint interface of the trainers (mmcl_fast/experiments/common/checkpoint.py)."""
from dataclasses import dataclass, field

import pytest
import torch

from mmcl_fast.experiments.common.checkpoint import (
    CheckpointMismatch,
    config_differences,
    restore_checkpoint,
    save_checkpoint,
)


@dataclass
class Cfg:
    lr: float = 1e-3
    hidden: tuple[int, ...] = (8, 8)
    steps: int = 10
    tags: list[str] = field(default_factory=list)


class Run:
    def __init__(self, cfg: Cfg):
        self.cfg = cfg
        self.step_count = 0
        self.net = torch.nn.Linear(3, 2)
        self.gen = torch.Generator().manual_seed(1)

    def state_dict(self):
        return {"net": self.net.state_dict(), "gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])
        self.gen.set_state(state["gen"])


def test_round_trip_restores_weights_step_and_random_streams(tmp_path):
    a = Run(Cfg())
    a.step_count = 7
    torch.rand(3, generator=a.gen)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(a, path)
    assert not list(tmp_path.glob("*.tmp"))           # written through a renamed temporary file
    want_global, want_gen = torch.rand(4), torch.rand(4, generator=a.gen)
    b = Run(Cfg())
    assert restore_checkpoint(b, path)
    assert b.step_count == 7
    assert torch.equal(b.net.weight, a.net.weight)
    assert torch.equal(torch.rand(4), want_global) and torch.equal(torch.rand(4, generator=b.gen), want_gen)
    assert not restore_checkpoint(Run(Cfg()), tmp_path / "absent.pt")
    torch.save({"config": {}, "g1": {}}, tmp_path / "older.pt")      # another format: refused
    with pytest.raises(CheckpointMismatch, match="not in this version's checkpoint format"):
        restore_checkpoint(Run(Cfg()), tmp_path / "older.pt")


def test_another_configuration_is_refused_naming_every_differing_field(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(Run(Cfg()), path)
    with pytest.raises(CheckpointMismatch, match=r"hidden: \[8, 8\] in the checkpoint, \[8, 16\] now; "
                                                 r"lr: 0.001 in the checkpoint, 0.01 now"):
        restore_checkpoint(Run(Cfg(lr=1e-2, hidden=(8, 16))), path)
    assert restore_checkpoint(Run(Cfg(steps=20)), path, free_fields=("steps",))
    with pytest.raises(CheckpointMismatch, match="steps: 10 in the checkpoint, 20 now"):
        restore_checkpoint(Run(Cfg(steps=20)), path)


def test_config_differences_treats_tuples_and_lists_alike_and_sees_added_fields():
    assert config_differences({"h": [1, 2]}, {"h": (1, 2)}) == {}
    assert config_differences({"a": 1}, {"a": 1, "b": 2}) == {"b": (None, 2)}


def test_one_finished_run_rule_for_every_trainer(tmp_path):
    """finished_result (common/step_loop.py), used by all four trainers: results.json is reused
    when its configuration equals the current one up to the trainer's result-free fields."""
    import json
    from dataclasses import asdict, replace

    from mmcl_fast.experiments.common.step_loop import finished_result

    cfg = Cfg(tags=["a"])
    assert finished_result(tmp_path, cfg, True) is None  # nothing written yet
    (tmp_path / "results.json").write_text(json.dumps({"config": asdict(cfg), "score": 0.5}))
    assert finished_result(tmp_path, cfg, True)["score"] == 0.5
    assert finished_result(tmp_path, cfg, False) is None  # resume=False retrains
    assert finished_result(None, cfg, True) is None
    other = replace(cfg, lr=2e-3)
    assert finished_result(tmp_path, other, True) is None  # another configuration's result
    assert finished_result(tmp_path, other, True, result_free_fields=("lr",))["score"] == 0.5
    assert finished_result(tmp_path, replace(cfg, steps=20), True, ("lr",)) is None
