#!/bin/sh
# Launcher for local runs and tests: runs the sandbox's simulated actions runner with the
# job's JIT config. The provisioner runs it once per job, in its own process group, with:
#   BUILTIFUL_JOB_ID, BUILTIFUL_JIT_CONFIG_FILE (0600), BUILTIFUL_VCPUS,
#   BUILTIFUL_CPU_ARCHITECTURE, BUILTIFUL_OS, BUILTIFUL_LABEL, BUILTIFUL_MAX_RUN_TIME.
# Optional:
#   BUILTIFUL_SANDBOX_SERVER_BIN    the builtiful-server binary (default: from PATH)
#   BUILTIFUL_SANDBOX_IDLE_TIMEOUT  seconds the runner waits for its job (default: 60)
set -eu

: "${BUILTIFUL_JOB_ID:?set by the provisioner}"
: "${BUILTIFUL_JIT_CONFIG_FILE:?set by the provisioner}"

echo "sandbox launcher: job ${BUILTIFUL_JOB_ID}, ${BUILTIFUL_VCPUS:-?} vCPUs, ${BUILTIFUL_LABEL:-?}"
# exec: the runner is the launcher process, so the provisioner's SIGTERM reaches it directly.
exec "${BUILTIFUL_SANDBOX_SERVER_BIN:-builtiful-server}" sandbox runner \
  --idle-timeout "${BUILTIFUL_SANDBOX_IDLE_TIMEOUT:-60}"
