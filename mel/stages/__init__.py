"""The stages of one RL step, one module each, as plain functions over artifact URIs (no orchestration here).

`mel.stages.table` declares them, in order, once: name, function, input and output artifact roles (with their file
names under ``step_NNNN/``), the condition that enables each, its resources and its typed stats record;
`mel.stages.step` is what a stage is and how a step runs from such a table (``run_stage``: reuse complete outputs,
else call the stage function). A stage function is ``fn(cfg, ctx, **inputs) -> stats``; each stats record declares its
columns of the step's metrics row, which ``update`` writes (``StepStats.metrics_row``: the merge of the step's).
``evaluate`` holds the eval cells' stages.
The Prefect tasks (``tasks.stage``) are made from the table entries.
"""
