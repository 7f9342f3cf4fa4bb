"""Entry point: `python predict.py ckpt_path=<ckpt or run dir> inputs=<file|folder|glob> [top_k=3]
[output=preds.csv|.json]`. See README.md and conf/predict.yaml."""

import hydra
from omegaconf import DictConfig

from transferlab.config import register_resolvers
from transferlab.config.command import check_added_keys, command_line
from transferlab.errors import reported

register_resolvers()  # before Hydra resolves paths (${launch_dir:}) and the run dir


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with reported():
        check_added_keys(cfg)  # `+foo=1`: refused, not ignored
        # torch and Lightning load once the config is known to be right: a mistake is answered at once
        from transferlab.tasks.predict import run

        run(cfg)


if __name__ == "__main__":
    with command_line():  # a mistake on the command line or in the config: one line, exit 2
        main()
