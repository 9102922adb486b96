#!/usr/bin/env bash
# systemd is not PID 1 on CI machines: start the daemons the VM tests need, if not running.
set -u
mkdir -p /run/libvirt
# What Debian's udev rule does (no udev here): /dev/kvm root:kvm 0660. Left at root 0600,
# libvirtd probes qemu as root (KVM on) but validates as libvirt-qemu (KVM off), finds its
# capability cache stale on every lookup and re-probes: ~30-60 s per VM definition.
if [ -c /dev/kvm ] && getent group kvm >/dev/null; then chgrp kvm /dev/kvm; chmod 0660 /dev/kvm; fi
pgrep -x virtlogd >/dev/null || virtlogd -d 2>/dev/null || true
pgrep -x libvirtd >/dev/null || libvirtd -d 2>/dev/null || true
for _ in $(seq 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "! libvirtd did not answer on qemu:///system; vm tests will report it" >&2
exit 0
