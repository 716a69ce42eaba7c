#!/usr/bin/env bash
# Run protocol seeds one process at a time (2 cores: one LM job at a time is fastest).
# Usage: bash benchmarks/run_queue.sh ENV:AGENT:SEED ...   (results cached under runs/evaluate/)
set -u
# real data: the offline mirror beside the repository, unless the caller set PROMPTGYM_DATA_DIR (as the Makefile)
export PROMPTGYM_DATA_DIR="${PROMPTGYM_DATA_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}"
cd "$(dirname "$0")/.."
for item in "$@"; do
  IFS=: read -r env agent seed <<< "$item"
  .venv/bin/python benchmarks/run_lite.py --env "$env" --plan "$agent:$seed" --threads "${THREADS:-2}"
done
