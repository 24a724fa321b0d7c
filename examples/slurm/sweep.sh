#!/bin/bash
# A jacbench sweep as a Slurm job array: task i runs shard i of SHARDS.
#   sbatch sweep.sh --preset peers --out results/peers        # every shard
#   sbatch --array=2 sweep.sh --preset peers --out results/peers   # shard 2 again
#   jacbench merge results/peers                              # once they have finished
# The arguments are `jacbench run`'s. A task that runs again (re-submitted, requeued)
# resumes its shard, and a finished shard is left as it is: re-running the whole array
# finishes only what is missing.
#SBATCH --job-name=jacbench-sweep
#SBATCH --array=0-3
#SBATCH --cpus-per-task=1
#SBATCH --output=jacbench-sweep-%A_%a.out
set -euo pipefail
SHARDS=4  # as many as the --array above has tasks
exec jacbench run "$@" --shard "$SLURM_ARRAY_TASK_ID/$SHARDS" --resume-if-present
