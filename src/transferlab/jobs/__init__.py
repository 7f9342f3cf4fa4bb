"""Training jobs that survive their sweeps: `run_job`, the task `train.py` hands to Hydra.

One module per concern:

- `job.py`: `run_job` (a failed job in a multirun is recorded and the sweep goes on) and `run_repeated`;
- `attempts.py`: what earlier attempts left in the job's directory (resume from last.ckpt, skip a finished job,
  set a failed attempt aside), `job.json`, a failed job's summary.json;
- `repetitions.py`: `repeat: {seeds: [...], folds: K}` and its `rep_seed<s>_fold<i>/` directories (named and
  parsed there, for the sweep report too), the repeated job's summary;
- `gpus.py`: one GPU per parallel job;
- `ddp.py`: DDP ranks > 0 re-run this job, not the sweep.

No module imports torch or Lightning at import time.
"""

from transferlab.jobs.job import run_job

__all__ = ["run_job"]
