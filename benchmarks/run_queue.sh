#!/usr/bin/env bash
# Run protocol seeds one process at a time (2 cores: one LM job at a time is fastest).
# Usage: bash benchmarks/run_queue.sh ENV:AGENT:SEED ...   (results cached under runs/evaluate/)
set -u
cd "$(dirname "$0")/.."
for item in "$@"; do
  IFS=: read -r env agent seed <<< "$item"
  .venv/bin/python benchmarks/run_lite.py --env "$env" --plan "$agent:$seed" --threads "${THREADS:-2}"
done
