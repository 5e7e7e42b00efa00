"""Prefect tasks, thin wrappers over the pure core: one cached task per stage of a step, made from the stage table
by ``tasks.stage.stage_task``; ``prepare`` (the base model) and ``evaluate`` (eval cells) beside them.

Every task takes the run's config hash and its upstream artifact URIs and returns what names its outputs; it is cached
with ``INPUTS + TASK_SOURCE`` (results persisted next to the run), and the core function itself returns at once when
its outputs' manifests already exist, so a rerun recomputes nothing that finished.
"""
