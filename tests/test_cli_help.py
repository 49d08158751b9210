"""Every command-line flag of the trainers has a help text, taken from the config dataclasses."""
import argparse
import dataclasses

import pytest

from mmcl_fast.experiments.beyond_dags import config as beyond_dags_config
from mmcl_fast.experiments.beyond_dags import run_beyond_dags
from mmcl_fast.experiments.comm import config as comm_config
from mmcl_fast.experiments.comm import run_comm
from mmcl_fast.experiments.common.config_flags import add_config_flags, option
from mmcl_fast.experiments.identifiability import config as simulation_config
from mmcl_fast.experiments.identifiability import simulate
from mmcl_fast.experiments.imagetext import config as imagetext_config
from mmcl_fast.experiments.imagetext import train_imagetext


@pytest.mark.parametrize("build, config", [(simulate.build_parser, simulation_config.SimConfig),
                                           (train_imagetext.build_parser, imagetext_config.ImageTextConfig),
                                           (run_beyond_dags.build_parser, beyond_dags_config.BeyondDagsConfig),
                                           (run_comm.build_parser, comm_config.CommConfig)])
def test_every_flag_has_a_help_text(build, config):
    parser = build()
    flags = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    for f in dataclasses.fields(config):
        assert f.name in flags, f.name
        assert f.metadata["help"] in flags[f.name].help  # the text comes from the dataclass field
    for dest, action in flags.items():
        assert action.help and len(action.help) > 10, dest


def test_a_config_field_without_help_is_refused():
    @dataclasses.dataclass
    class Bare:
        documented: int = option(1, "a documented option")
        bare: int = 2

    with pytest.raises(ValueError, match="Bare.bare has no help text"):
        add_config_flags(argparse.ArgumentParser(), Bare)
    with pytest.raises(ValueError, match="needs a help text"):
        option(3, "")
