"""`build_report(sweep_dir)`: find the jobs, group them, compare them, write the files."""

from __future__ import annotations

from pathlib import Path

from transferlab.sweep_report.collect import defining_keys, find_jobs, group_configs, repeat_keys
from transferlab.sweep_report.compare import paired_comparisons
from transferlab.sweep_report.plot import write_config_plot, write_plot
from transferlab.sweep_report.render import (
    COMPARISONS_CSV,
    FILES,
    JOBS_CSV,
    paired_lines,
    write_comparisons_csv,
    write_config_csv,
    write_csv,
    write_markdown,
)


def build_report(sweep_dir: str | Path) -> dict[str, Path]:
    """Write summary.csv, summary.md and summary.png into `sweep_dir` (and summary_jobs.csv with repetitions,
    comparisons.csv when jobs wrote val_predictions.csv); return their paths."""
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    if not sweep_dir.is_dir():
        raise FileNotFoundError(
            f"Sweep directory {sweep_dir} does not exist; pass outputs/train/multiruns/<date>/<time>.")
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(
            f"No job directories (with .hydra/overrides.yaml or summary.json) under {sweep_dir}; "
            "is this a Hydra multirun directory (outputs/train/multiruns/<date>/<time>)?"
        )
    keys = defining_keys(jobs)
    rkeys = repeat_keys(jobs, keys)
    config_keys = [k for k in keys if k not in rkeys]
    configs = group_configs(jobs, config_keys if rkeys else keys)
    paths = {name: sweep_dir / name for name in FILES}
    paired = paired_comparisons(configs, rkeys)
    lines = paired_lines(paired, rkeys)
    if rkeys:
        write_config_csv(configs, config_keys, rkeys, paths["summary.csv"])
        paths[JOBS_CSV] = sweep_dir / JOBS_CSV
        write_csv(jobs, keys, paths[JOBS_CSV])
        write_markdown(jobs, keys, paths["summary.md"], sweep_dir, configs, rkeys, lines)
        write_config_plot(configs, paths["summary.png"], sweep_dir)
    else:
        write_csv(jobs, keys, paths["summary.csv"])
        write_markdown(jobs, keys, paths["summary.md"], sweep_dir, paired=lines)
        write_plot(jobs, keys, paths["summary.png"], sweep_dir)
    if paired.comparisons:
        paths[COMPARISONS_CSV] = sweep_dir / COMPARISONS_CSV
        write_comparisons_csv(paired.comparisons, paths[COMPARISONS_CSV])
    return paths
