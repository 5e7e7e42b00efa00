"""Prefect tasks: thin, typed wrappers over the pure stage functions in ``mel.stages``, one module per stage.

Every task takes the run's config hash and its upstream artifact URIs and returns a ``StageResult`` naming its output
URI; it is cached with ``INPUTS + TASK_SOURCE`` (results persisted next to the run), and the stage function itself
returns at once when its output's manifest already exists, so a rerun recomputes nothing that finished.
"""
