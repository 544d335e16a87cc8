#!/usr/bin/env bash
# What jobs written for GitHub-hosted runners expect to find:
# - /opt/hostedtoolcache, owned by the runner user, named by AGENT_TOOLSDIRECTORY
#   and RUNNER_TOOL_CACHE (setup-python, setup-node, ... install there);
# - ImageOS (setup-python picks its prebuilt Pythons by it);
# - optionally, job-started/-completed hooks (RUNNER_HOOKS=true).
# All of it goes into the runner's .env, which Runner.Listener loads at start
# and passes to every job. Run again, it rewrites the same file.
set -euo pipefail
RUNNER_DIR=${RUNNER_DIR:-/opt/actions-runner}
RUNNER_USER=${RUNNER_USER:-runner}
TOOL_CACHE=${TOOL_CACHE:-/opt/hostedtoolcache}
HOOKS_DIR=${HOOKS_DIR:-/opt/garo/hooks}
SRC=${SRC:-/tmp/garo}
RUNNER_HOOKS=${RUNNER_HOOKS:-false}
IMAGE_OS=${IMAGE_OS:-ubuntu24}

case "$IMAGE_OS" in *[!A-Za-z0-9._-]*|'') echo "IMAGE_OS must be a plain word, got '$IMAGE_OS'" >&2; exit 1 ;; esac
case "$RUNNER_HOOKS" in true|false) ;; *) echo "RUNNER_HOOKS must be true or false" >&2; exit 1 ;; esac
id "$RUNNER_USER" >/dev/null 2>&1 || { echo "no user $RUNNER_USER (30-runner.sh creates it)" >&2; exit 1; }
[ -d "$RUNNER_DIR" ] || { echo "no runner in $RUNNER_DIR (30-runner.sh installs it)" >&2; exit 1; }

install -d -o "$RUNNER_USER" -g "$(id -gn "$RUNNER_USER")" -m 0755 "$TOOL_CACHE"

env_file=$(mktemp)
{
  echo "LANG=C.UTF-8"
  echo "ImageOS=$IMAGE_OS"
  echo "AGENT_TOOLSDIRECTORY=$TOOL_CACHE"
  echo "RUNNER_TOOL_CACHE=$TOOL_CACHE"
} >"$env_file"

if [ "$RUNNER_HOOKS" = true ]; then
  install -d -m 0755 "$HOOKS_DIR"
  # Root-owned and not writable by the job: a job must not rewrite what runs around the next one.
  install -m 0755 "$SRC/hooks/job-started.sh" "$HOOKS_DIR/job-started.sh"
  install -m 0755 "$SRC/hooks/job-completed.sh" "$HOOKS_DIR/job-completed.sh"
  echo "ACTIONS_RUNNER_HOOK_JOB_STARTED=$HOOKS_DIR/job-started.sh" >>"$env_file"
  echo "ACTIONS_RUNNER_HOOK_JOB_COMPLETED=$HOOKS_DIR/job-completed.sh" >>"$env_file"
fi
install -o root -g root -m 0644 "$env_file" "$RUNNER_DIR/.env" # read by the runner, not its to change
rm -f "$env_file"
