"""Entry point: `python eval.py ckpt_path=<ckpt or run dir> [dataset=... dataset.root=...] [split=val]`.
See README.md and conf/eval.yaml."""

import hydra
from omegaconf import DictConfig

from transferlab.config import register_resolvers
from transferlab.config.command import check_added_keys, command_line
from transferlab.errors import reported

register_resolvers()  # before Hydra resolves paths (${launch_dir:}) and the run dir


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    with reported():
        check_added_keys(cfg)  # `+foo=1`: refused, not ignored
    # torch and Lightning load once the config is known to be right: a mistake is answered at once
    from transferlab.tasks.evaluate import ClassMismatchError, RunDirError, run

    with reported(ClassMismatchError, RunDirError):
        return run(cfg)["accuracy"]


if __name__ == "__main__":
    with command_line():  # a mistake on the command line or in the config: one line, exit 2
        main()
