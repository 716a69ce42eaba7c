#!/usr/bin/env bash
# Smoke run of `promptgym train` for every registered agent on the default model and real SST-2 data,
# on the env kind each agent needs, with a small budget. Prints each run's final lines.
#   PROMPTGYM_DATA_DIR=../shared/data bash benchmarks/train_all_agents.sh [BUDGET]
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-40}"
pg=.venv/bin/promptgym
run() { echo "== $*"; "$pg" train --quiet --budget "$budget" --seed 13 --split-seed 13 --out runs/smoke "$@" | tail -3; }
for agent in bdpl random manual calibrated icl ppo a2c; do run --env PromptSST2-v0 --agent "$agent"; done
for agent in bbt random sac ppo; do run --env PromptSST2-Subspace-v0 --agent "$agent"; done
for agent in ppo a2c bdpl; do run --env PromptSST2-Tokenwise-v0 --agent "$agent"; done
run --env PromptSST2-Subspace-v0 --agent prompt_tuning --agent-kwarg epochs=2
