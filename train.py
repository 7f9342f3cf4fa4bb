"""Entry point: `python train.py [overrides]`. See README.md and conf/train.yaml."""

import hydra
from omegaconf import DictConfig

from transferlab.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg).get("val/acc_best")  # the value Hydra sweepers (e.g. Optuna) optimise


if __name__ == "__main__":
    main()
