#!/usr/bin/env bash
# Installs everything cnilab's lab, scenarios and tests need on a Debian 12 machine, as root.
# Safe to re-run: apt and pip skip what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# `setup.sh netns`: only what a netns lab and the scenarios need (make demo); no argument:
# everything the tests and benchmarks use (make test).
NETNS_PACKAGES=(
  iproute2 iputils-ping iperf3 procps kmod            # netns lab, scenarios
  containernetworking-plugins                         # host-local IPAM + reference ptp/bridge baselines
  jq                                                  # the shell-plugin example (examples/shell-plugin)
)
ALL_PACKAGES=(
  "${NETNS_PACKAGES[@]}" strace                       # strace: tests
  openssh-server openssh-client                       # a real sshd for the SSH tests
  sudo                                                # SshNode's sudo path, tested for real
  qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
  dnsmasq-base iptables mmdebstrap e2fsprogs xorriso  # VMs: libvirt, image build
  podman runc                                         # lab image pod/node; container nodes (runc:
                                                      # crun refuses where root cannot raise rlimits)
  docker-registry                                     # live tests: a registry mirror on the lab network
  xdelta3                                             # lab deploy: a changed plugin as a delta
  vagrant vagrant-libvirt                             # `vagrant validate` of the Vagrantfile
  hyperfine                                           # bench/
)
case "${1:-all}" in
  netns) APT_PACKAGES=("${NETNS_PACKAGES[@]}"); EXTRAS="[demo]" ;;
  all) APT_PACKAGES=("${ALL_PACKAGES[@]}"); EXTRAS="[dev]" ;;
  *) echo "usage: $0 [netns|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "• apt: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "• venv: .venv ($($PY --version))"
  "$PY" -m venv .venv
fi
echo "• pip: cnilab$EXTRAS"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".$EXTRAS"
echo "✓ set up: activate with 'source .venv/bin/activate'"
