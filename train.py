"""Find lottery tickets: ``python train.py [overrides]`` runs iterative magnitude pruning as conf/ says.

Examples: ``python train.py prune.rate=0.2 prune.rounds=10``, ``python train.py experiment=lenet_mnist``,
``python train.py -m prune.rate=0.1,0.2,0.3 seed=0,1``. A bad config exits with one line naming the key (exit
code 2); a round whose loss diverges exits with one line naming the round and iteration (exit code 3).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lth.artifacts import holds_results
from lth.config import register_resolvers
from lth.errors import ConfigError

register_resolvers()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Run IMP; return the sparsest round's test accuracy (a sweep's objective)."""
    from lth.distributed import is_rank_zero
    from lth.run import RunError, train

    try:
        rounds = train(cfg)["rounds"]
    except ConfigError as error:
        if is_rank_zero():  # under DDP every rank gets the error; rank 0 says it and cleans up
            run_dir = Path(HydraConfig.get().runtime.output_dir)
            if run_dir.is_dir() and not holds_results(run_dir):
                shutil.rmtree(run_dir)
            print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except RunError as error:  # a diverged round: the rounds before it stay on disk, resumable
        if is_rank_zero():
            print(f"error: {error}", file=sys.stderr)
        sys.exit(3)
    return rounds[-1]["test_acc"]


if __name__ == "__main__":
    main()
