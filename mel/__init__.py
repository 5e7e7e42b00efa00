"""mel: the pure core of an RLVR system with Meta-Experience Learning.

Config, artifact schemas and I/O, the RL math (``mel.algos``), the policy update, rollout engines, verifiers, task
sets and the stage functions. Nothing here imports Prefect, Ray or vLLM (``tests/test_boundary.py`` checks it); the
orchestration lives in ``flows/`` and ``tasks/``.
"""

__version__ = "0.1.0"
