"""The parts of training that the loop in ``seqkit/train.py`` calls on.

- ``run.py``: ``setup_run`` builds the ``Run`` the loop works on (tokenizer, task, model,
  transfer, optimizer, schedule, scaler), ``restore`` resumes it, ``Run.save_best`` /
  ``Run.save_last`` write the checkpoints.
- ``optim.py``: the optimizer and the learning-rate schedule.
- ``records.py``: log sums, ``metrics.jsonl``, TensorBoard, the run's ``config.yaml``.
- ``faults.py``: stop signals, NaN/inf checks, one-line reports of what failed.
- ``run_dir.py``: what counts as seqkit's run directory, its lock, ``--overwrite``.
"""
