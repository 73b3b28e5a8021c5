#!/usr/bin/env bash
# Export the official C-TRPO raw runs (github.com/milosen/ctrpo, data/runs) and import them into
# a safebench results root, for `safebench report RESULTS --against ROOT --map c-trpo-hyst=ctrpo`.
#
#   scripts/tools/import_ctrpo_runs.sh SOURCE INTO [ENV ...]
#
#   SOURCE  a checkout of milosen/ctrpo (a folder holding data/runs), a git repository of it
#           (bare or not: the files are taken from its HEAD with `git archive`), or a URL to
#           clone it from (https://github.com/milosen/ctrpo; about 1 GB, needs the network)
#   INTO    the safebench results root to import into (made if missing; importing again is a
#           no-op for runs already there)
#   ENV     task ids to take (default: SafetyHalfCheetahVelocity-v1 SafetyHopperVelocity-v1,
#           the tasks of experiments/fidelity.yaml); `all` takes every task
#
# The baselines (cpo, pcpo, p3o, ppo_lag, ...) come from data/runs/benchmark, C-TRPO from
# data/runs/ablation (c-trpo-hyst: the runs the paper reports as C-TRPO; c-trpo: without
# hysteresis; cpo-hyst). Labels are the official folder names. Runs whose progress.csv is empty
# (aborted launches in the official data) are skipped and listed.
#
# The raw files are exported to $CTRPO_EXPORT (default: INTO-raw) and kept there: point
# SAFEBENCH_CTRPO_RUNS at that folder to run the slow test of tests/report/test_against.py. The
# official repository has no licence: keep its files and anything derived from them out of
# this repository.
set -euo pipefail

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && usage 0
[[ $# -lt 2 ]] && { echo "error: need SOURCE and INTO (see --help)" >&2; exit 2; }

SOURCE=$1
INTO=$2
shift 2
ENVS=("$@")
[[ ${#ENVS[@]} -eq 0 ]] && ENVS=(SafetyHalfCheetahVelocity-v1 SafetyHopperVelocity-v1)
EXPORT=${CTRPO_EXPORT:-${INTO%/}-raw}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
SAFEBENCH=${SAFEBENCH:-$(command -v safebench || echo "$HERE/.venv/bin/safebench")}
GROUPS_=(benchmark ablation)

paths=()
for group in "${GROUPS_[@]}"; do
    if [[ "${ENVS[*]}" == "all" ]]; then
        paths+=("data/runs/$group")
    else
        for env in "${ENVS[@]}"; do paths+=("data/runs/$group/$env"); done
    fi
done

mkdir -p "$EXPORT"
if [[ -d "$SOURCE/data/runs" ]]; then
    echo "copying ${#paths[@]} folder(s) from the checkout $SOURCE to $EXPORT"
    for p in "${paths[@]}"; do
        [[ -d "$SOURCE/$p" ]] || { echo "error: $SOURCE/$p does not exist" >&2; exit 2; }
        mkdir -p "$EXPORT/$(dirname "$p")"
        cp -r "$SOURCE/$p" "$EXPORT/$(dirname "$p")/"
    done
else
    repo=$SOURCE
    if [[ "$SOURCE" == *://* ]]; then
        repo=$(mktemp -d)
        trap 'rm -rf "$repo"' EXIT
        echo "cloning $SOURCE (no checkout) into $repo"
        git clone --quiet --bare "$SOURCE" "$repo"
    fi
    git -C "$repo" rev-parse --verify --quiet HEAD >/dev/null || {
        echo "error: $SOURCE is neither a checkout holding data/runs nor a git repository" >&2
        exit 2
    }
    echo "exporting ${#paths[@]} folder(s) from $(git -C "$repo" rev-parse --short HEAD) to $EXPORT"
    git -C "$repo" archive HEAD "${paths[@]}" | tar -x -C "$EXPORT"
fi

for group in "${GROUPS_[@]}"; do
    "$SAFEBENCH" import safepo "$EXPORT/data/runs/$group" --into "$INTO"
done
echo "imported into $INTO; raw runs kept in $EXPORT (SAFEBENCH_CTRPO_RUNS=$EXPORT)"
