"""Entry point: `python train.py [overrides]`. See README.md and conf/train.yaml."""

import hydra
from omegaconf import DictConfig

from transferlab.config import register_resolvers
from transferlab.config.command import command_line
from transferlab.errors import reported
from transferlab.jobs import run_job

register_resolvers()  # before Hydra resolves paths (also the sweep dir, before any job runs)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # val/acc_best, the value sweepers (e.g. Optuna) optimise; in a multirun a failed job returns None and the
    # sweep goes on (see transferlab.tasks.job).
    with reported():
        return run_job(cfg)


if __name__ == "__main__":
    with command_line():  # a mistake on the command line or in the config: one line, exit 2
        main()
