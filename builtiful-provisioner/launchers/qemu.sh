#!/usr/bin/env bash
# Launcher that runs each job in a throwaway QEMU/KVM virtual machine with exactly the job's
# vCPUs. The JIT runner config reaches the VM through a cloud-init NoCloud seed; the VM runs
# the GitHub Actions runner for that one job, powers off, and its disk is deleted.
#
# The provisioner runs it once per job, in its own process group, with:
#   BUILTIFUL_JOB_ID, BUILTIFUL_JIT_CONFIG_FILE (0600), BUILTIFUL_VCPUS,
#   BUILTIFUL_CPU_ARCHITECTURE (Amd64|Arm64), BUILTIFUL_OS (Ubuntu2204|Ubuntu2404),
#   BUILTIFUL_LABEL, BUILTIFUL_MAX_RUN_TIME.
# It stops the launcher with SIGTERM (then SIGKILL after a grace): the trap below destroys
# the VM and its files.
#
# Settings (environment; the systemd unit's Environment= is the place for them):
#   BUILTIFUL_QEMU_IMAGE_DIR   base images (default /var/lib/builtiful-provisioner/images),
#                              named ubuntu-<24.04|22.04>-<amd64|arm64>.qcow2
#   BUILTIFUL_QEMU_WORK_DIR    per-job overlay disks and seeds (default /var/tmp)
#   BUILTIFUL_QEMU_MEMORY_MB_PER_VCPU  (default 4096)
#   BUILTIFUL_QEMU_DISK_SIZE   the overlay's size (default 64G)
#   BUILTIFUL_QEMU_NETDEV      a -netdev value (default user-mode NAT: "user,id=net0")
#   BUILTIFUL_QEMU_AARCH64_FIRMWARE  UEFI firmware for arm64 (default Debian's QEMU_EFI.fd)
#
# The image: an Ubuntu cloud image (https://cloud-images.ubuntu.com/, the "*-server-cloudimg-
# <arch>.img" of the release) with cloud-init (already there), a user `runner` with
# passwordless sudo, and the actions runner unpacked in /home/runner/actions-runner with its
# dependencies (`./bin/installdependencies.sh`). For example, with libguestfs-tools:
#   virt-customize -a ubuntu-24.04-amd64.qcow2 \
#     --run-command 'useradd -m -s /bin/bash -G sudo runner' \
#     --write '/etc/sudoers.d/runner:runner ALL=(ALL) NOPASSWD:ALL' \
#     --run-command 'mkdir /home/runner/actions-runner && curl -fsSL <runner tarball URL> | tar -xz -C /home/runner/actions-runner && /home/runner/actions-runner/bin/installdependencies.sh && chown -R runner: /home/runner'
# Host packages: qemu-system-x86 (or qemu-system-arm + qemu-efi-aarch64), qemu-utils, and
# cloud-image-utils (cloud-localds) or genisoimage.
set -euo pipefail

: "${BUILTIFUL_JOB_ID:?set by the provisioner}"
: "${BUILTIFUL_JIT_CONFIG_FILE:?set by the provisioner}"
: "${BUILTIFUL_VCPUS:?set by the provisioner}"
: "${BUILTIFUL_CPU_ARCHITECTURE:?set by the provisioner}"
: "${BUILTIFUL_OS:?set by the provisioner}"

image_dir=${BUILTIFUL_QEMU_IMAGE_DIR:-/var/lib/builtiful-provisioner/images}
work_root=${BUILTIFUL_QEMU_WORK_DIR:-/var/tmp}
memory_mb=$(( BUILTIFUL_VCPUS * ${BUILTIFUL_QEMU_MEMORY_MB_PER_VCPU:-4096} ))
netdev=${BUILTIFUL_QEMU_NETDEV:-user,id=net0}

case "$BUILTIFUL_OS" in
  Ubuntu2404) release=24.04 ;;
  Ubuntu2204) release=22.04 ;;
  *) echo "qemu launcher: unsupported OS $BUILTIFUL_OS" >&2; exit 2 ;;
esac
case "$BUILTIFUL_CPU_ARCHITECTURE" in
  Amd64)
    arch=amd64
    qemu=(qemu-system-x86_64 -machine "q35,accel=kvm" -cpu host)
    ;;
  Arm64)
    arch=arm64
    qemu=(qemu-system-aarch64 -machine "virt,accel=kvm" -cpu host
          -bios "${BUILTIFUL_QEMU_AARCH64_FIRMWARE:-/usr/share/qemu-efi-aarch64/QEMU_EFI.fd}")
    ;;
  *) echo "qemu launcher: unsupported architecture $BUILTIFUL_CPU_ARCHITECTURE" >&2; exit 2 ;;
esac
image="$image_dir/ubuntu-$release-$arch.qcow2"
if [[ ! -r "$image" ]]; then
  echo "qemu launcher: no base image $image (see the comment at the top of $0)" >&2
  exit 2
fi

work=$(mktemp -d "$work_root/builtiful-$BUILTIFUL_JOB_ID.XXXXXX")
chmod 0700 "$work"
qemu_pid=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [[ -n "$qemu_pid" ]] && kill -0 "$qemu_pid" 2>/dev/null; then
    # SIGTERM makes QEMU quit at once: the VM is destroyed, not shut down.
    kill -TERM "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "qemu launcher: stopping the VM"; exit 143' TERM INT

# A copy-on-write overlay: the base image is never written.
qemu-img create -q -f qcow2 -F qcow2 -b "$image" "$work/disk.qcow2" "${BUILTIFUL_QEMU_DISK_SIZE:-64G}"

# The cloud-init seed. The JIT config travels base64-encoded inside user-data, is written
# 0600 for the runner user, and is read once by run.sh; the seed dies with $work.
jit_b64=$(base64 -w0 < "$BUILTIFUL_JIT_CONFIG_FILE")
cat > "$work/meta-data" <<META
instance-id: builtiful-$BUILTIFUL_JOB_ID
local-hostname: builtiful-${BUILTIFUL_JOB_ID:0:8}
META
cat > "$work/user-data" <<USER
#cloud-config
write_files:
  - path: /run/builtiful/jitconfig
    owner: runner:runner
    permissions: "0600"
    encoding: b64
    content: $jit_b64
runcmd:
  - [su, -l, runner, -c, 'cd ~/actions-runner && ./run.sh --jitconfig "\$(cat /run/builtiful/jitconfig)"; rm -f /run/builtiful/jitconfig']
power_state:
  mode: poweroff
  condition: true
USER
chmod 0600 "$work/user-data"
if command -v cloud-localds >/dev/null; then
  cloud-localds "$work/seed.img" "$work/user-data" "$work/meta-data"
else
  genisoimage -quiet -output "$work/seed.img" -volid cidata -joliet -rock \
    "$work/user-data" "$work/meta-data"
fi
rm -f "$work/user-data"

echo "qemu launcher: job $BUILTIFUL_JOB_ID on ubuntu-$release-$arch, $BUILTIFUL_VCPUS vCPUs, ${memory_mb} MiB"
# In the background, so that the TERM trap runs as soon as the signal comes.
"${qemu[@]}" \
  -name "builtiful-$BUILTIFUL_JOB_ID" \
  -smp "$BUILTIFUL_VCPUS" -m "$memory_mb" \
  -display none -serial stdio -monitor none -no-reboot \
  -drive "file=$work/disk.qcow2,if=virtio,format=qcow2" \
  -drive "file=$work/seed.img,if=virtio,format=raw,readonly=on" \
  -netdev "$netdev" -device virtio-net-pci,netdev=net0 \
  < /dev/null &
qemu_pid=$!
status=0
wait "$qemu_pid" || status=$?
qemu_pid=
exit "$status"
