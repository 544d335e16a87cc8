#!/usr/bin/env bash
# Runs as the runner user after each job (ACTIONS_RUNNER_HOOK_JOB_COMPLETED,
# enabled with runner_hooks=true). The VM is deleted after its one job, so
# there is nothing to clean; the default records the end in the journal.
set -euo pipefail
logger -t garo-job "completed repository=${GITHUB_REPOSITORY:-?} run=${GITHUB_RUN_ID:-?} job=${GITHUB_JOB:-?}" || true
