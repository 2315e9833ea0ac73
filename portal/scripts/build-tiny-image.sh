#!/usr/bin/env bash
# Builds a tiny bootable OS image (qcow2) for the portal's end-to-end tests.
#
#   build-tiny-image.sh OUTPUT.qcow2
#
# The image is an ordinary disk: SeaBIOS -> syslinux (FAT16, no partition table) -> Debian's
# cloud kernel + a busybox initramfs. Its init loads the virtio drivers, takes a DHCP lease on
# eth0, keeps a boot counter in a sector just past the end of the FAT volume, prints
#   TINY-IMAGE boot=N ip=A.B.C.D
# on the VGA console and on ttyS0, and powers off cleanly on an ACPI power-button press
# (`virsh shutdown`). No mount and no loop device are used to build it.
#
# Environment:
#   TINY_IMAGE_CACHE       cache dir for downloaded .debs and extracted files
#                          (default /work/main/var/cache/tiny-image)
#   TINY_IMAGE_KERNEL_PKG  kernel package to use (default: what linux-image-cloud-amd64 depends
#                          on, i.e. the current linux-image-6.1.0-*-cloud-amd64)
#   TINY_IMAGE_FORCE=1     rebuild even when OUTPUT is newer than this script
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

if [ -e "$output" ] && [ "$output" -nt "$script_path" ] && [ "${TINY_IMAGE_FORCE:-0}" != 1 ]; then
  echo "$output"
  exit 0
fi

cache=${TINY_IMAGE_CACHE:-/work/main/var/cache/tiny-image}
mkdir -p -- "$cache/debs" "$cache/x"
cache=$(cd -- "$cache" && pwd)

# Parallel test workers may build at the same time: one builder per cache.
exec 9>"$cache/.lock"
flock 9
if [ -e "$output" ] && [ "$output" -nt "$script_path" ] && [ "${TINY_IMAGE_FORCE:-0}" != 1 ]; then
  echo "$output"
  exit 0
fi

log() { echo "build-tiny-image: $*" >&2; }
start_ts=$(date +%s.%N)

# --- Debian packages ------------------------------------------------------------------------
apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null || log "apt-get update failed (offline?); going on"
    apt_updated=1
  fi
}
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
ensure_packages() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
    exit 1
  fi
  apt_update_once
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
# busybox-static is not installed on the host: its .deb is downloaded into the cache like the
# kernel's (installing it would replace a dynamic `busybox` package the host may rely on).
ensure_packages dosfstools mtools syslinux syslinux-common cpio qemu-utils gzip

# apt-get download into the cache (reusing a cached .deb); sets $fetched to its path.
# (Not run in a $(...) subshell, so that apt_update_once really runs at most once.)
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ && $2 != "(none)" {print $2}'; }
fetch_deb() {
  local pkg=$1 ver deb
  ver=$(candidate "$pkg")
  if [ -z "$ver" ]; then apt_update_once; ver=$(candidate "$pkg"); fi
  if [ -z "$ver" ]; then
    # Offline or no apt lists: fall back to a .deb already in the cache.
    deb=$(find "$cache/debs" -maxdepth 1 -name "${pkg}_*.deb" 2>/dev/null | sort -V | tail -n 1)
    [ -n "$deb" ] || { log "cannot find package $pkg (apt-get update?)"; exit 1; }
    fetched=$deb; return 0
  fi
  deb="$cache/debs/${pkg}_${ver//:/%3a}_amd64.deb"
  if [ ! -s "$deb" ]; then
    rm -rf "$cache/debs/tmp.$$"; mkdir -p "$cache/debs/tmp.$$"
    log "apt-get download $pkg=$ver"
    (cd "$cache/debs/tmp.$$" && apt-get download -qq -o APT::Sandbox::User=root "$pkg=$ver" >/dev/null)
    mv "$cache/debs/tmp.$$/"*.deb "$deb"
    rmdir "$cache/debs/tmp.$$"
  fi
  fetched=$deb
}

kernel_pkg=${TINY_IMAGE_KERNEL_PKG:-}
if [ -z "$kernel_pkg" ]; then
  kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n 1 || true)
  if [ -z "$kernel_pkg" ]; then
    apt_update_once
    kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
      | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n 1 || true)
  fi
  if [ -z "$kernel_pkg" ]; then
    kernel_pkg=$(find "$cache/debs" -maxdepth 1 -name 'linux-image-*-cloud-amd64_*.deb' -printf '%f\n' 2>/dev/null \
      | sed -n 's/^\(linux-image-[0-9][^_]*-cloud-amd64\)_.*\.deb$/\1/p' | sort -V | tail -n 1)
  fi
  [ -n "$kernel_pkg" ] || { log "cannot resolve the cloud kernel package"; exit 1; }
fi

fetch_deb "$kernel_pkg"; kernel_deb=$fetched
fetch_deb busybox-static; busybox_deb=$fetched

work=$(mktemp -d "${TMPDIR:-/tmp}/tiny-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# busybox: dpkg -x once (no install).
bbdir="$cache/x/$(basename "$busybox_deb" .deb)"
if [ ! -e "$bbdir/.done" ]; then
  rm -rf "$bbdir"; mkdir -p "$bbdir"
  dpkg -x "$busybox_deb" "$bbdir"
  touch "$bbdir/.done"
fi
busybox="$bbdir/bin/busybox"
[ -x "$busybox" ] || { log "no busybox in $busybox_deb"; exit 1; }

# --- kernel and modules -----------------------------------------------------------------------
# Wanted drivers; their dependencies are resolved from each module's .modinfo "depends=" and
# emitted dependencies-first (for Debian 6.1 that gives virtio_ring, virtio_pci_modern_dev,
# virtio_pci_legacy_dev, virtio, virtio_pci, failover, net_failover, virtio_net, virtio_blk,
# button, evdev: virtio must come after virtio_ring, else "Unknown symbol
# virtio_break_device"). button = ACPI power button, evdev = /dev/input/event* for acpid.
# Debian 6.1 ships plain .ko files; .ko.xz/.ko.zst/.ko.gz (other kernels) are decompressed
# here, since busybox insmod loads plain .ko only.
# The kernel .deb is unpacked once into a scratch dir and only vmlinuz + the needed modules
# are kept in the cache ("prepared"), so a cached build skips the 100 MB of modules.
wanted=(virtio_pci virtio_net virtio_blk button evdev)
kprep="$cache/prepared/$(basename "$kernel_deb" .deb)-$(echo "${wanted[*]}" | cksum | cut -d' ' -f1)"
if [ ! -e "$kprep/.done" ]; then
  kx="$work/kernel-x"
  mkdir -p "$kx"
  dpkg -x "$kernel_deb" "$kx"
  vmlinuz=$(find "$kx/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n 1)
  [ -n "$vmlinuz" ] || { log "no vmlinuz in $kernel_deb"; exit 1; }
  kver=${vmlinuz##*/vmlinuz-}
  moddir="$kx/lib/modules/$kver"

  declare -A ko_path=()
  while IFS= read -r f; do
    n=${f##*/}; n=${n%%.ko*}; n=${n//-/_}
    ko_path[$n]=$f
  done < <(find "$moddir/kernel" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')
  builtin_has() { [ -e "$moddir/modules.builtin" ] && sed 's/-/_/g' "$moddir/modules.builtin" | grep -q "/${1}\.ko\$"; }
  ko_plain() {
    local src=$1 dst=$2
    case "$src" in
      *.ko) cp "$src" "$dst" ;;
      *.ko.xz) command -v xz >/dev/null || ensure_packages xz-utils; xz -dc "$src" >"$dst" ;;
      *.ko.zst) command -v zstd >/dev/null || ensure_packages zstd; zstd -qdc "$src" >"$dst" ;;
      *.ko.gz) gzip -dc "$src" >"$dst" ;;
    esac
  }
  declare -A seen=()
  order=()
  resolve() {
    local m=$1 deps d
    [ -n "${seen[$m]:-}" ] && return 0
    seen[$m]=1
    if [ -z "${ko_path[$m]:-}" ]; then
      if builtin_has "$m"; then return 0; fi
      log "module $m is neither in $kernel_pkg nor built in"; exit 1
    fi
    ko_plain "${ko_path[$m]}" "$kprep.tmp/modules/$m.ko"
    deps=$(tr '\0' '\n' <"$kprep.tmp/modules/$m.ko" | sed -n 's/^depends=//p' | head -n 1)
    for d in ${deps//,/ }; do resolve "${d//-/_}"; done
    order+=("$m")
  }
  rm -rf "$kprep" "$kprep.tmp"; mkdir -p "$kprep.tmp/modules"
  for m in "${wanted[@]}"; do resolve "$m"; done
  printf '%s\n' "${order[@]}" >"$kprep.tmp/modules.order"
  cp "$vmlinuz" "$kprep.tmp/vmlinuz"
  echo "$kver" >"$kprep.tmp/version"
  touch "$kprep.tmp/.done"
  mv "$kprep.tmp" "$kprep"
  rm -rf "$kx"
fi
vmlinuz="$kprep/vmlinuz"
kver=$(cat "$kprep/version")

root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,run,tmp,root,etc/acpi/PWRF,lib/modules,var/log}
ln -s bin "$root/sbin"
mkdir -p "$root/usr"
ln -s ../bin "$root/usr/bin"
ln -s ../bin "$root/usr/sbin"
ln -s ../run "$root/var/run"
cp "$kprep"/modules/*.ko "$root/lib/modules/"
cp "$kprep/modules.order" "$root/etc/modules.order"

# --- userland -------------------------------------------------------------------------------
cp "$busybox" "$root/bin/busybox"
for a in $("$busybox" --list); do
  [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"
done

cat >"$root/init" <<'EOF'
#!/bin/sh
# PID 1: mount the basics, get a console, hand over to busybox init (which runs /etc/rc and
# handles poweroff/reboot properly).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
exec 0</dev/console 1>/dev/console 2>&1
exec /bin/busybox init
EOF

cat >"$root/etc/inittab" <<'EOF'
::sysinit:/etc/rc
ttyS0::respawn:-/bin/sh
tty1::respawn:-/bin/sh
::ctrlaltdel:/bin/reboot
::shutdown:/etc/rc.shutdown
EOF

cat >"$root/etc/rc.common" <<'EOF'
export PATH=/bin
# Every console the kernel writes to (tty0 = VGA/VNC, ttyS0 = serial), plus ttyS0 anyway.
say() {
  local list c
  list=$(cat /sys/class/tty/console/active 2>/dev/null)
  case " $list " in *" ttyS0 "*) ;; *) list="$list ttyS0" ;; esac
  for c in $list; do
    [ -c "/dev/$c" ] && echo "$*" >"/dev/$c" 2>/dev/null
  done
  return 0
}
EOF

cat >"$root/etc/rc" <<'EOF'
#!/bin/sh
. /etc/rc.common
hostname tiny
echo 1 >/proc/sys/kernel/printk 2>/dev/null  # keep the consoles readable from here on

for m in $(cat /etc/modules.order); do
  insmod "/lib/modules/$m.ko" || say "TINY-IMAGE warning: insmod $m failed"
done

# ACPI power button -> poweroff (virsh shutdown).
i=0; while [ ! -e /dev/input/event0 ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done
acpid -c /etc/acpi -l /run/acpid.log -p /run/acpid.pid

# Boot counter: one text record in the sector just past the FAT volume (its number is on the
# kernel command line, written by the image builder). A zero sector counts as "never booted";
# anything else that is not our record is left alone.
sector=
for arg in $(cat /proc/cmdline); do
  case "$arg" in tiny.counter_sector=*) sector=${arg#tiny.counter_sector=} ;; esac
done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
boot=unknown
if [ -n "$sector" ] && [ -b /dev/vda ] && [ "$(cat /sys/block/vda/size)" -gt "$sector" ]; then
  rec=$(dd if=/dev/vda bs=512 skip="$sector" count=1 2>/dev/null | tr -d '\000' | head -n 1)
  n=
  case "$rec" in
    "") n=0 ;;
    "TINY-IMAGE-BOOTCOUNT "*) n=${rec#TINY-IMAGE-BOOTCOUNT }
       case "$n" in ''|*[!0-9]*) n= ;; esac ;;
  esac
  if [ -n "$n" ]; then
    n=$((n + 1))
    if printf 'TINY-IMAGE-BOOTCOUNT %d\n' "$n" \
        | dd of=/dev/vda bs=512 seek="$sector" count=1 conv=sync,notrunc,fsync 2>/dev/null; then
      sync
      boot=$n
    else
      say "TINY-IMAGE warning: cannot write the boot counter"
    fi
  else
    say "TINY-IMAGE warning: sector $sector of /dev/vda holds no boot counter; left alone"
  fi
fi
echo "$boot" >/run/tiny-boot

ip link set lo up
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
ip link set eth0 up
# Foreground until a lease (or 10 tries), then udhcpc stays in the background for renewals.
udhcpc -i eth0 -s /etc/udhcpc.script -p /run/udhcpc.pid -x hostname:tiny -t 10 -T 2 -b >/run/udhcpc.log 2>&1
ip=$(cat /run/tiny-ip 2>/dev/null)
say "TINY-IMAGE boot=$boot ip=${ip:-none}"
EOF

cat >"$root/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# udhcpc event hook: put the leased address on the interface so `ip addr` shows it.
. /etc/rc.common
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    rm -f /run/tiny-ip
    ;;
  bound|renew)
    old=$(cat /run/tiny-ip 2>/dev/null)
    if [ "$old" != "$ip" ] || [ "$1" = bound ]; then
      ip -4 addr flush dev "$interface"
      if [ -n "$mask" ]; then
        ip addr add "$ip/$mask" ${broadcast:+broadcast "$broadcast"} dev "$interface"
      else
        ifconfig "$interface" "$ip" ${subnet:+netmask "$subnet"}
      fi
      for r in $router; do ip route add default via "$r" dev "$interface" && break; done
    fi
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    echo "$ip" >/run/tiny-ip
    [ "$old" != "$ip" ] && [ -n "$old" ] && say "TINY-IMAGE boot=$(cat /run/tiny-boot) ip=$ip"
    ;;
esac
exit 0
EOF

cat >"$root/etc/rc.shutdown" <<'EOF'
#!/bin/sh
. /etc/rc.common
say "TINY-IMAGE shutdown boot=$(cat /run/tiny-boot 2>/dev/null)"
[ -e /run/udhcpc.pid ] && kill "$(cat /run/udhcpc.pid)" 2>/dev/null
sync
EOF

cat >"$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
. /etc/rc.common
say "TINY-IMAGE power button: powering off"
poweroff
EOF
# No /etc/acpid.conf or /etc/acpi.map on purpose: when they are absent, busybox acpid uses its
# built-in KEY_POWER -> "PWRF" -> /etc/acpi/PWRF/00000080 mapping (an EMPTY file would map nothing).
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo tiny >"$root/etc/hostname"
chmod 755 "$root/init" "$root/etc/rc" "$root/etc/udhcpc.script" "$root/etc/rc.shutdown" \
  "$root/etc/acpi/PWRF/00000080"

(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
  | gzip -9n >"$work/initrd.gz"

# --- disk -----------------------------------------------------------------------------------
# Raw layout, no partition table: [FAT16 volume | 1 MiB reserved; its first sector = counter].
mib=$((1024 * 1024))
payload=$(( $(stat -c %s "$vmlinuz") + $(stat -c %s "$work/initrd.gz") ))
fat_mib=$(( (payload + mib - 1) / mib + 4 ))
[ "$fat_mib" -ge 16 ] || fat_mib=16
counter_sector=$(( fat_mib * mib / 512 ))
raw="$work/disk.raw"
truncate -s $(( (fat_mib + 1) * mib )) "$raw"
# (mkfs.fat warns "block count mismatch" because the file is larger than the volume: intended.)
mkfs.fat -F 16 -n TINYIMAGE -i 7141e000 "$raw" $(( fat_mib * 1024 )) >"$work/mkfs.log" 2>&1 \
  || { cat "$work/mkfs.log" >&2; exit 1; }

cat >"$work/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT tiny
PROMPT 0
TIMEOUT 0
LABEL tiny
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND console=tty0 console=ttyS0,115200n8 panic=10 tiny.counter_sector=$counter_sector
EOF

export MTOOLS_SKIP_CHECK=1
mcopy -i "$raw" "$vmlinuz" ::vmlinuz
mcopy -i "$raw" "$work/initrd.gz" ::initrd.gz
mcopy -i "$raw" "$work/syslinux.cfg" ::syslinux.cfg
syslinux --install "$raw"

tmp_out="$output.tmp.$$"
trap 'rm -rf "$work" "$tmp_out"' EXIT
# -c: zlib-compressed clusters (about 12 MiB instead of 15; the LZ4 kernel still deflates a bit).
qemu-img convert -c -f raw -O qcow2 "$raw" "$tmp_out"
mv -f "$tmp_out" "$output"

end_ts=$(date +%s.%N)
log "$kernel_pkg ($kver), initrd $(stat -c %s "$work/initrd.gz") bytes, FAT ${fat_mib} MiB," \
  "counter at sector $counter_sector, $(stat -c %s "$output") bytes," \
  "$(awk -v a="$start_ts" -v b="$end_ts" 'BEGIN {printf "%.1f", b - a}') s"
echo "$output"
