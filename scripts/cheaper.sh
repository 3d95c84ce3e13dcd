#!/usr/bin/env bash
# The runs behind docs/cheaper.md: LeNet-300-100 on MNIST, 3 seeds, every way of finding a ticket at 21.1%, 7.0%,
# 3.6% and 1.9% weights remaining, with what each cost. Round 0 (the dense network) is trained once per seed and
# shared through outputs/dense. About two hours on one CPU thread.
# Usage: bash scripts/cheaper.sh [data folder, default ../shared/data] [output folder, default outputs/cheaper]
#        [Hydra overrides added to every run ...]
# SEEDS (default 0,1,2), TARGETS (the one-shot and early-bird sparsities, default 0.789,0.93,0.964,0.981) and FIGURES
# (default docs/figures/cheaper) in the environment change the seeds, the targets and where the figure goes; a quick
# look on generated data (what tests/test_scripts.py runs, with TARGETS=0.93,0.981):
#   SEEDS=0 FIGURES=/tmp/cheaper/figures bash scripts/cheaper.sh data /tmp/cheaper dataset=synthetic train.steps=4it \
#     train.eval_every=2it paths.output_dir=/tmp/cheaper/outputs
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
OUT=${2:-outputs/cheaper}
shift $(($# < 2 ? $# : 2))
SEEDS=${SEEDS:-0,1,2}
FIGURES=${FIGURES:-docs/figures/cheaper}
RUN=(python train.py -m "paths.data_dir=$DATA" hardware.threads=1 "seed=$SEEDS" "$@")
TARGETS=prune.target_sparsity=${TARGETS:-0.789,0.93,0.964,0.981}
export OMP_NUM_THREADS=1
# one-shot magnitude pruning and pruning at initialisation: one pruned round each
"${RUN[@]}" prune.rounds=1 "$TARGETS" prune.method=magnitude,snip,grasp,synflow,magnitude_init,random \
  "hydra.sweep.dir=$OUT/oneshot"
# early-bird tickets, with You et al.'s distance and the one normalised by the weights kept
"${RUN[@]}" prune.rounds=1 "$TARGETS" prune.method=early_bird prune.early_bird.distance=all,kept \
  "hydra.sweep.dir=$OUT/early_bird"
# shuffled and reinitialised masks of one-shot magnitude pruning and of SNIP, at 7.0% and 1.9%
"${RUN[@]}" prune.rounds=1 prune.target_sparsity=0.93,0.981 prune.method=magnitude,snip prune.control=shuffle,reinit \
  "hydra.sweep.dir=$OUT/controls"
# iterative magnitude pruning: 18 rounds of equal fractions to 1.9% (rounds 7, 12, 15 are the other rows)
"${RUN[@]}" prune.rounds=18 prune.target_sparsity=0.981 "hydra.sweep.dir=$OUT/imp"
python scripts/report.py "$OUT/imp" "$OUT/oneshot" --ignore seed prune.target_sparsity \
  --sparsities 100 21.1 7.0 3.6 1.9 --metric test_acc train_iterations train_flops --out "$OUT/methods.md"
python scripts/report.py "$OUT/early_bird" "$OUT/controls" --ignore seed prune.target_sparsity \
  --sparsities 100 21.1 7.0 3.6 1.9 --metric test_acc train_iterations --out "$OUT/early_bird_controls.md"
python scripts/plot.py "$OUT/imp" "$OUT/oneshot" "$OUT/early_bird" --ignore seed prune.target_sparsity \
  --x train_iterations --metric test_acc --out "$FIGURES"
