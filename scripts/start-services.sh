#!/usr/bin/env bash
# systemd is not PID 1 on CI machines: start the daemons the VM tests need, if not running.
set -u
mkdir -p /run/libvirt
pgrep -x virtlogd >/dev/null || virtlogd -d 2>/dev/null || true
pgrep -x libvirtd >/dev/null || libvirtd -d 2>/dev/null || true
for _ in $(seq 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "! libvirtd did not answer on qemu:///system; vm tests will report it" >&2
exit 0
