"""`python -m transferlab.advise <root> [backbone=...] [overrides]`: which transfer strategy for this data?

A thin entry point; the measures, thresholds and recommendation table are in `transferlab.tasks.advise`."""

from __future__ import annotations

import logging
import sys

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from transferlab.tasks.advise import main as advise_main
from transferlab.tasks.errors import reported


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with reported(HydraException, OmegaConfBaseException, ValueError):
        return advise_main(argv)


if __name__ == "__main__":
    sys.exit(main())
