"""The experiments around the loss library (install with ``pip install "mmcl-fast[experiments]"``).

* ``identifiability``: the numerical simulation of Daunhawer et al. (ICLR 2023, Sec. 5.1);
* ``imagetext``: image/text pairs from a procedural Multimodal3DIdent (Sec. 5.2);
* ``common``: probes and metrics, learning-rate schedules, dataclass -> CLI flags;
* ``benchmark``: the CPU benchmark harness of ``benchmarks/``; ``cli``: the ``mmcl-fast`` command.

They use only the public API of :mod:`mmcl_fast`.
"""
