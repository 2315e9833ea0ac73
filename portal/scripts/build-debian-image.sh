#!/usr/bin/env bash
# Builds a Debian 12 cloud-style OS image (qcow2) for the portal's end-to-end tests.
#
#   build-debian-image.sh OUTPUT.qcow2
#
# What a cloud image has: Debian's cloud kernel, systemd, cloud-init reading a NoCloud seed,
# openssh-server, ifupdown + DHCP, growpart, sudo; the default user is cloud-init's `debian`.
# The disk: MBR (syslinux's mbr.bin), p1 a 96 MiB FAT16 boot partition (syslinux, the kernel,
# the initrd), p2 the ext4 root labelled `root`, last so that growpart can grow it to the
# instance's disk. Built from Debian packages with mmdebstrap into a directory, the root file
# system written by `mke2fs -d`: no mount and no loop device.
#
# The kernel and initrd are copied to the boot partition once, here: an `apt upgrade` of the
# kernel inside a guest keeps booting the image's kernel (enough for a test image).
#
# Environment:
#   DEBIAN_IMAGE_CACHE   cache dir for the .debs of the last build (default: OUTPUT's directory)
#   DEBIAN_IMAGE_FORCE=1 rebuild even when OUTPUT is newer than this script
#
# When OUTPUT exists and is newer than this script, nothing is done and its path is printed.
set -euo pipefail

usage() { echo "usage: $0 OUTPUT.qcow2" >&2; exit 2; }
[ $# -eq 1 ] || usage
case "$1" in -h|--help) usage ;; esac

script_path=$(readlink -f "${BASH_SOURCE[0]}")
out_dir=$(dirname -- "$1")
mkdir -p -- "$out_dir"
output="$(cd -- "$out_dir" && pwd)/$(basename -- "$1")"

fresh() { [ -e "$output" ] && [ "$output" -nt "$script_path" ] && [ "${DEBIAN_IMAGE_FORCE:-0}" != 1 ]; }
if fresh; then
  echo "$output"
  exit 0
fi

cache=${DEBIAN_IMAGE_CACHE:-$(dirname -- "$output")}
mkdir -p -- "$cache/debs"
cache=$(cd -- "$cache" && pwd)

# Parallel test workers may build at the same time: one builder per cache.
exec 9>"$cache/.lock"
flock 9
if fresh; then
  echo "$output"
  exit 0
fi

log() { echo "build-debian-image: $*" >&2; }
start_ts=$(date +%s.%N)
if [ "$(id -u)" -ne 0 ]; then
  # mmdebstrap's root mode, and a root file system whose files belong to root.
  log "must run as root"
  exit 1
fi

# --- Debian packages of the build machine ---------------------------------------------------
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in mmdebstrap dosfstools mtools syslinux syslinux-common fdisk e2fsprogs qemu-utils; do
  pkg_installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq >/dev/null || log "apt-get update failed (offline?); going on"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/debian-image.XXXXXX")
tmp_out="$output.tmp.$$"
trap 'rm -rf "$work" "$tmp_out"' EXIT
rootdir="$work/root"

# --- the root file system -------------------------------------------------------------------
# The .debs of the last build are handed to apt (and kept, with the new ones, by --skip), so a
# rebuild after a change of this script downloads only what changed upstream.
# RESUME=none before the kernel's initramfs is made: in a chroot, initramfs-tools would
# otherwise pick the build machine's swap as the resume device and the guest would wait for it.
# The build machine's apt settings on the validity of Release files are handed on, so that the
# mirror it uses works for the build too.
aptopts=()
valid_until=$(apt-config dump Acquire::Check-Valid-Until 2>/dev/null | sed -n 's/^Acquire::Check-Valid-Until "\(.*\)";$/\1/p')
[ -n "$valid_until" ] && aptopts+=(--aptopt="Acquire::Check-Valid-Until \"$valid_until\"")
packages=linux-image-cloud-amd64,systemd-sysv,udev,cloud-init,openssh-server,ifupdown,isc-dhcp-client
packages+=,initramfs-tools,cloud-guest-utils,e2fsprogs,netbase,iproute2,sudo
# dbus, so that systemd-logind runs and powers the guest off on an ACPI power-button press
# (`virsh shutdown`, the portal's stop): without it the press is ignored until the timeout.
packages+=,dbus
log "mmdebstrap bookworm ($packages)"
mmdebstrap --mode=root --variant=minbase --include="$packages" \
  --skip=essential/unlink,cleanup/apt/cache \
  "${aptopts[@]}" \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives" "$1/etc/initramfs-tools/conf.d"' \
  --setup-hook="find '$cache/debs' -maxdepth 1 -name '*.deb' -exec cp -t \"\$1/var/cache/apt/archives\" {} +" \
  --setup-hook='echo RESUME=none >"$1/etc/initramfs-tools/conf.d/resume"' \
  bookworm "$rootdir" >"$work/mmdebstrap.log" 2>&1 \
  || { tail -n 40 "$work/mmdebstrap.log" >&2; exit 1; }
debootstrapped_ts=$(date +%s.%N)

# Keep the .debs of exactly what was installed, for the next build.
rm -rf "$cache/debs.new"; mkdir -p "$cache/debs.new"
while IFS= read -r deb; do
  [ -e "$rootdir/var/cache/apt/archives/$deb" ] && mv "$rootdir/var/cache/apt/archives/$deb" "$cache/debs.new/"
done < <(dpkg-query --admindir="$rootdir/var/lib/dpkg" -W \
  -f='${Package}_${Version}_${Architecture}.deb\n' | sed 's/:/%3a/')
rm -rf "$cache/debs"; mv "$cache/debs.new" "$cache/debs"
rm -f "$rootdir"/var/cache/apt/archives/*.deb "$rootdir"/var/cache/apt/*.bin
rm -rf "$rootdir"/var/lib/apt/lists/*

# What makes it a cloud image rather than this machine's copy: the seed is the only data
# source (no probing of cloud metadata addresses), a fresh machine id and fresh SSH host keys
# in every guest, and the root file system found by its label.
cat >"$rootdir/etc/fstab" <<'EOF'
LABEL=root / ext4 defaults,errors=remount-ro 0 1
EOF
cat >"$rootdir/etc/cloud/cloud.cfg.d/90-portal-nocloud.cfg" <<'EOF'
datasource_list: [ NoCloud, None ]
# An RSA host key takes many seconds under software emulation; these two are enough.
ssh_genkeytypes: [ ed25519, ecdsa ]
# No locales package here (cloud-init's en_US.UTF-8 would fail): glibc has C.UTF-8 built in.
locale: C.UTF-8
EOF
rm -f "$rootdir"/etc/ssh/ssh_host_*
: >"$rootdir/etc/machine-id"
rm -f "$rootdir/var/lib/dbus/machine-id"
echo debian >"$rootdir/etc/hostname"
cat >"$rootdir/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
EOF
rm -f "$rootdir/etc/resolv.conf"
: >"$rootdir/etc/resolv.conf"

vmlinuz=$(find "$rootdir/boot" -maxdepth 1 -name 'vmlinuz-*-cloud-amd64' | sort -V | tail -n 1)
[ -n "$vmlinuz" ] || { log "no cloud kernel in the root file system"; exit 1; }
kver=${vmlinuz##*/vmlinuz-}
initrd="$rootdir/boot/initrd.img-$kver"
[ -s "$initrd" ] || { log "no initrd for $kver"; exit 1; }

# --- the disk -------------------------------------------------------------------------------
mib=$((1024 * 1024))
boot_mib=96
used_mib=$(du -sx --block-size=1M "$rootdir" | cut -f1)
# A quarter more than the files (ext4's own metadata, journal) plus 256 MiB of room.
root_mib=$(( used_mib * 5 / 4 + 256 ))
root_start_mib=$(( 1 + boot_mib ))
raw="$work/disk.raw"
truncate -s $(( (root_start_mib + root_mib) * mib )) "$raw"
sfdisk -q "$raw" <<EOF
label: dos
unit: sectors
start=2048, size=$(( boot_mib * 2048 )), type=6, bootable
start=$(( root_start_mib * 2048 )), size=$(( root_mib * 2048 )), type=83
EOF
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none

# The root file system straight into its partition (-E offset): no copy of 1 GiB through dd.
mke2fs -q -F -t ext4 -L root -E offset=$(( root_start_mib * mib )) -d "$rootdir" "$raw" "${root_mib}M"

# The boot partition: FAT16 whose hidden-sectors field (-h) says where the partition starts,
# which syslinux's boot sector needs to find itself on the disk.
cat >"$work/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=LABEL=root ro console=tty0 console=ttyS0,115200n8
EOF
boot="$work/boot.fat"
mkfs.fat -F 16 -n DEBIANBOOT -h 2048 -i 0deb1a12 -C "$boot" $(( boot_mib * 1024 )) >"$work/mkfs.log" 2>&1 \
  || { cat "$work/mkfs.log" >&2; exit 1; }
export MTOOLS_SKIP_CHECK=1
mcopy -i "$boot" "$vmlinuz" ::vmlinuz
mcopy -i "$boot" "$initrd" ::initrd.img
mcopy -i "$boot" "$work/syslinux.cfg" ::syslinux.cfg
syslinux --install "$boot"
dd if="$boot" of="$raw" bs=1M seek=1 conv=notrunc status=none

# -c: zlib-compressed clusters, about 200 MB instead of 1.2 GB.
qemu-img convert -c -f raw -O qcow2 "$raw" "$tmp_out"
mv -f "$tmp_out" "$output"

end_ts=$(date +%s.%N)
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }
log "kernel $kver, root ${root_mib} MiB (${used_mib} MiB of files), $(stat -c %s "$output") bytes," \
  "mmdebstrap $(secs "$start_ts" "$debootstrapped_ts") s, total $(secs "$start_ts" "$end_ts") s"
echo "$output"
