#!/usr/bin/env bash
# Installs the Debian packages the portal needs, when they are missing and we are root.
# Safe to run again: it installs nothing that is already there.
set -euo pipefail

packages=(
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
  qemu-system-x86 qemu-utils dnsmasq-base redis-server postgresql
  # translations: makemessages/compilemessages and the catalogue test (msgattrib); the invoice PDF's CJK font
  gettext fonts-wqy-microhei
  chromium nodejs npm gcc python3-dev python3-venv
  # network namespaces and veth pairs (second-host.sh, the shaping probe): libvirt only recommends it
  iproute2
  # busybox's DHCP client, run in namespaces by tests/e2e/test_dhcp_capacity.py (it needs busybox
  # or busybox-static, whichever the host has)
  udhcpc
  # the test images (build-tiny-image.sh, build-debian-image.sh): no mount, no loop device
  mmdebstrap dosfstools mtools syslinux syslinux-common fdisk e2fsprogs cpio
  # the install-ISO test builds a bootable CD: isolinux.bin, and xorriso to write El Torito
  isolinux xorriso
  # the TLS proxy of docs/deploy.md, run by `make prod-smoke` and tests/ops/test_production.py
  nginx-light
)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Node, PostgreSQL and Redis may come from elsewhere on a developer's machine; only the
# commands matter for those.
filtered=()
for pkg in "${missing[@]}"; do
  case "$pkg" in
    nodejs|npm) command -v npm >/dev/null 2>&1 || filtered+=("$pkg") ;;
    postgresql) command -v pg_ctlcluster >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1 || filtered+=("$pkg") ;;
    redis-server) command -v redis-server >/dev/null 2>&1 || filtered+=("$pkg") ;;
    python3-dev|python3-venv|gcc) python3 -c 'import venv, sysconfig, os; assert os.path.exists(sysconfig.get_paths()["include"])' 2>/dev/null || filtered+=("$pkg") ;;
    *) filtered+=("$pkg") ;;
  esac
done
if [ ${#filtered[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${filtered[*]}" >&2
  echo "Install them with: sudo apt-get install ${filtered[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${filtered[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${filtered[@]}" >/dev/null
