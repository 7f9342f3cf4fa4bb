"""The comparison report of a sweep: one row per job, written as summary.csv, summary.md and summary.png.

Built from what every job leaves in its own directory (`.hydra/overrides.yaml`, `summary.json`), so it can be
rebuilt at any time, for any sweep directory, including one still running or one that crashed:

    python -m transferlab.sweep_report outputs/train/multiruns/2026-11-23/07-00-00

A job without `summary.json` is listed as `incomplete` (still running, killed, or crashed outside the job
wrapper); a job whose `summary.json` says `failed` shows the first line of its error.

Repetitions. When an override in `REPEAT_KEYS` (`seed`, `dataset.fold`) takes several values, the jobs that
differ only in those are repetitions of one configuration: summary.csv, summary.md and summary.png then have
one row (point) per configuration with the mean, standard deviation (n - 1), n, min and max of best val acc and
wall time over its ok repetitions; the per-job table moves to summary_jobs.csv (and the end of summary.md).
Without such an override the report is one row per job, as it always was.

Paired comparison. Jobs that wrote `val_predictions.csv` (the `val_predictions` callback) are compared on
the same images: the best configuration against each other one, with a paired bootstrap interval of the
accuracy difference and an exact McNemar test (`transferlab.evaluation.stats`; with repetitions, repetition
i of one configuration is paired with the repetition of the other that has the same seed/fold), said in one
sentence per comparison in summary.md and written with full precision to comparisons.csv. Jobs without the
file (sweeps from before it existed) and jobs whose val sets differ are not compared, with a note.

One module per step: `collect.py` (find the jobs, read their directories, group them into configurations),
`compare.py` (spreads over repetitions, paired comparisons), `render.py` (CSV and Markdown), `plot.py` (the
PNG; matplotlib only when drawing), `report.py` (`build_report`), `cli.py` (`main`), `callback.py`
(`SweepReport`, the Hydra callback). Importing the package imports no torch, Lightning or matplotlib.
"""

from transferlab.sweep_report.callback import SweepReport
from transferlab.sweep_report.cli import main
from transferlab.sweep_report.collect import REPEAT_KEYS, Config, Job, defining_keys, find_jobs, repeat_keys
from transferlab.sweep_report.compare import BOOT_SEED, LEVEL, N_BOOT, Comparison, compare, paired_comparisons
from transferlab.sweep_report.report import build_report

__all__ = [
    "BOOT_SEED", "LEVEL", "N_BOOT", "REPEAT_KEYS", "Comparison", "Config", "Job", "SweepReport", "build_report",
    "compare", "defining_keys", "find_jobs", "main", "paired_comparisons", "repeat_keys",
]
