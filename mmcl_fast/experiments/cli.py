"""The ``mmcl-fast`` command line.

    mmcl-fast simulate [--preset NAME] ...   the identifiability simulation (identifiability.simulate)
    mmcl-fast train-imagetext [...]          image/text pairs (imagetext.train_imagetext)
    mmcl-fast beyond-dags [--setting ...]     latent partial causal model (beyond_dags.run_beyond_dags)
    mmcl-fast comm [--method ...]             CoMM and baselines on bimodal Trifeatures (comm.run_comm)
    mmcl-fast info                           which operator backend is active
"""
from __future__ import annotations

import argparse
import json


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="mmcl-fast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    from .identifiability.simulate import build_parser as simulate_parser
    from .identifiability.simulate import main as simulate_main
    sim = sub.add_parser("simulate", help="numerical simulation of Daunhawer et al. (ICLR 2023)")
    simulate_parser(sim)
    sim.set_defaults(func=lambda a: simulate_main(args=a))
    from .imagetext.train_imagetext import build_parser as imagetext_parser
    from .imagetext.train_imagetext import main as imagetext_main
    it = sub.add_parser("train-imagetext", help="image/text pairs of the procedural Multimodal3DIdent")
    imagetext_parser(it)
    it.set_defaults(func=lambda a: imagetext_main(args=a))
    from .beyond_dags.run_beyond_dags import build_parser as beyond_dags_parser
    from .beyond_dags.run_beyond_dags import main as beyond_dags_main
    bd = sub.add_parser("beyond-dags", help="latent partial causal model of Liu et al. (sphere / box, L1)")
    beyond_dags_parser(bd)
    bd.set_defaults(func=lambda a: beyond_dags_main(args=a))
    from .comm.run_comm import build_parser as comm_parser
    from .comm.run_comm import main as comm_main
    cm = sub.add_parser("comm", help="CoMM vs Cross / Cross+Self on bimodal Trifeatures (R, U, S)")
    comm_parser(cm)
    cm.set_defaults(func=lambda a: comm_main(args=a))
    info = sub.add_parser("info", help="print the active backend")
    info.set_defaults(func=lambda a: print(json.dumps(__import__("mmcl_fast").backend_info(), indent=1)))
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
