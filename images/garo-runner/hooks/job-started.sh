#!/usr/bin/env bash
# Runs as the runner user before each job (ACTIONS_RUNNER_HOOK_JOB_STARTED,
# enabled with the image variable runner_hooks=true). Its output shows in the
# job's "Set up runner" step; a non-zero exit fails the job. Edit to taste:
# the default only records which job this VM took, in the journal.
set -euo pipefail
logger -t garo-job "started repository=${GITHUB_REPOSITORY:-?} run=${GITHUB_RUN_ID:-?} job=${GITHUB_JOB:-?}" || true
echo "Garo runner $(hostname): job ${GITHUB_JOB:-?} of ${GITHUB_REPOSITORY:-?}"
