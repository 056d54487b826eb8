#!/usr/bin/env bash
# Download Ego4D with a Slurm job array: N tasks share one output directory, each fetching the
# files whose S3 key hashes to its shard (ego4d-dl --shard K/N). No coordination server; each
# task keeps its own journal in <out>/.ego4d-dl/. Resubmit the same array to resume.
#
#   sbatch examples/slurm-ego4d-dl.sh                      # 8 tasks, the settings below
#   sbatch --array=1-16 examples/slurm-ego4d-dl.sh         # 16 tasks: N follows the array
#   ego4d-dl status -o "$EGO4D_OUT"                        # progress of every task, any node
#
# Keep --array starting at 1 and contiguous: K/N is taken from SLURM_ARRAY_TASK_ID and
# SLURM_ARRAY_TASK_COUNT. Changing N later is safe: files already complete are recognised.
#
#SBATCH --job-name=ego4d-dl
#SBATCH --array=1-8
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=2-00:00:00
#SBATCH --output=ego4d-dl-%A_%a.log
#SBATCH --open-mode=append

set -euo pipefail

# Settings: override any of them in the environment (sbatch --export=ALL,EGO4D_OUT=...).
EGO4D_OUT="${EGO4D_OUT:-$HOME/ego4d_data}"
EGO4D_DATASETS="${EGO4D_DATASETS:-full_scale annotations}"
EGO4D_PROFILE="${EGO4D_PROFILE:-}"          # empty: the standard AWS chain (env, ~/.aws)
# Per task; 8 tasks at 100MB/s leave room for colleagues on a 10 Gbit/s uplink.
EGO4D_MAX_BANDWIDTH="${EGO4D_MAX_BANDWIDTH:-100MB/s}"
EGO4D_DL="${EGO4D_DL:-ego4d-dl}"            # e.g. "$HOME/venvs/ego4d/bin/ego4d-dl"
EGO4D_EXTRA_ARGS="${EGO4D_EXTRA_ARGS:-}"    # e.g. "--version v2_1 --benchmarks FHO"

K="${SLURM_ARRAY_TASK_ID:?run this as a Slurm array job (sbatch), or set SLURM_ARRAY_TASK_ID}"
N="${SLURM_ARRAY_TASK_COUNT:?run this as a Slurm array job (sbatch), or set SLURM_ARRAY_TASK_COUNT}"

read -r -a datasets <<< "${EGO4D_DATASETS}"
read -r -a extra <<< "${EGO4D_EXTRA_ARGS}"
read -r -a command <<< "${EGO4D_DL}"
args=(download
    --output_directory "${EGO4D_OUT}"
    --datasets "${datasets[@]}"
    --shard "${K}/${N}"
    --yes --progress-interval 60)
if [[ -n "${EGO4D_PROFILE}" ]]; then
    args+=(--aws_profile_name "${EGO4D_PROFILE}")
fi
if [[ -n "${EGO4D_MAX_BANDWIDTH}" ]]; then
    args+=(--max-bandwidth "${EGO4D_MAX_BANDWIDTH}")
fi

echo "ego4d-dl shard ${K}/${N} on $(hostname) into ${EGO4D_OUT}"
set +e
"${command[@]}" "${args[@]}" "${extra[@]}"
status=$?
set -e

case "${status}" in
    0) echo "shard ${K}/${N}: every file complete and verified" ;;
    3) echo "shard ${K}/${N}: the keys were rejected or expired (they last 14 days);" \
            "renew them, then resubmit the same array to resume" ;;
    130) echo "shard ${K}/${N}: interrupted (time limit?); resubmit to resume" ;;
    *) echo "shard ${K}/${N}: some files failed (exit ${status}); resubmit to retry them," \
            "or see: ${EGO4D_DL} status -o ${EGO4D_OUT}" ;;
esac
exit "${status}"
