#!/usr/bin/env bash
# A second real libvirt host on this machine, for tests that need more than one host.
#
#   second-host.sh up NAME ADDR_INDEX      start it (or say how it runs, if it is up already)
#   second-host.sh down NAME               stop it and remove everything it made
#   second-host.sh status NAME             print how it runs; exit 1 when it is not up
#   second-host.sh stop-libvirtd NAME [--kill]   stop its libvirtd by PID (SIGTERM, or SIGKILL)
#   second-host.sh start-libvirtd NAME     start that libvirtd again, the same way
#   second-host.sh restart-libvirtd NAME [--kill]   both: a restart (or a crash) as clients see it
#   second-host.sh fence NAME              what powering the host off does to its guests: every
#                                          QEMU of its libvirtd killed by PID (its daemons stay)
#
# NAME: a lowercase name of at most 24 characters ([a-z0-9-]), unique to whoever runs it (the
# tests put their run id in it). ADDR_INDEX: 1..254, which /30 of 10.243.0.0/16 the host gets:
# 10.243.<ADDR_INDEX>.1 on this side, 10.243.<ADDR_INDEX>.2 in the host. `up` exits 3 when that
# /30 is taken (on any interface or route here), so a caller can try another index.
#
# What `up` does, step by step (as measured in the hypervisor notes, ../shared/HYPERVISOR-NOTES.md
# from the repository, "A second real libvirt host on the same machine"):
#  1. Makes its state directory, $PORTAL_HOSTS_DIR/NAME (default /var/lib/portal-hosts/NAME).
#     That directory is the record of ownership: `down` touches only hosts that have one.
#  2. `ip netns add NAME`, and a veth pair: vo<hash> here with 10.243.N.1/30, vi<hash> in the
#     namespace with 10.243.N.2/30 (hash: 8 hex digits of NAME's SHA-1; names stay under 15),
#     and a route to 10.243.0.0/16 through this side, so that hosts reach each other (a live
#     migration's memory and disk stream goes host to host): IPv4 forwarding is switched on for
#     vo<hash> alone (Linux forwards what arrives on an interface that forwards), not for the
#     machine's other interfaces.
#  3. Private copies in the state directory: etc/ (a copy of /etc/libvirt without any domain,
#     network, pool or secret, and with its own libvirtd.conf: listen_tcp = 1, listen_tls = 0,
#     auth_tcp = "none", listen_addr = 10.243.N.2, a fresh host_uuid, warnings logged to
#     log/libvirtd.log), lib/, log/ and cache/ (the directories of /var/lib/libvirt,
#     /var/log/libvirt and /var/cache/libvirt with their owners and modes, no files; the QEMU
#     capabilities cache is copied, which spares a slow probe), run/ (empty), pool/ (for the
#     caller's storage pool; outside the bind mounts, so this side sees it at the same path).
#  4. An anchor process, `sleep infinity`, started by `ip netns exec NAME unshare --mount --uts`:
#     it holds the namespace's mounts and hostname while daemons come and go, and every later
#     step enters its namespaces with `nsenter -t <anchor>`. `ip netns exec` remounts /sys so
#     that it shows the namespace's network devices (and no cgroup mounts: libvirt runs
#     without cgroups there). unshare makes every mount private, so nothing leaks out.
#  5. Inside: the copies bind-mounted over /etc/libvirt, /var/lib/libvirt, /run/libvirt,
#     /var/log/libvirt and /var/cache/libvirt; hostname NAME.
#  6. `virtlogd -d -p /run/libvirt/virtlogd.pid`, then `libvirtd -d --listen -p
#     /run/libvirt/libvirtd.pid`, in a clean environment (the pid files are the state
#     directory's run/*.pid from here). Without listen_tls = 0 libvirtd fails ("Unable to
#     initialize network sockets"); without -p its pid file clashes with the system daemon's.
#  7. Waits (at most 60 s) until `virsh -c qemu+tcp://10.243.N.2/system hostname` answers NAME,
#     then prints KEY=VALUE lines (also kept in host.env): NAME, URI, ADDRESS, PEER_ADDRESS,
#     POOL_DIR, STATE_DIR, NETNS, ANCHOR_PID, VIRTLOGD_PID, LIBVIRTD_PID.
#
# `down`: kills its libvirtd and virtlogd by the PIDs in their pid files, then whatever else
# still runs in its network namespace (guests and dnsmasq that its libvirtd started, found by
# `ip netns pids`), then the anchor; each PID is checked to be in this host's namespace before
# it is signalled. Then `ip netns del`, the veth, and the state directory. Safe to run again,
# and on a host that is half up.
#
# `restart-libvirtd` (and stop/start): its guests keep running. QEMU is not libvirtd's child
# in any sense that kills it with the daemon (libvirtd daemonizes it), and the new libvirtd
# finds it again through run/qemu and lib/qemu, which the anchor keeps mounted meanwhile.
#
# auth_tcp = "none" is for a test inside one machine only; between real hosts use qemu+ssh or
# qemu+tls. Root only.
set -euo pipefail

SELF=$(readlink -f "$0")
STATE_ROOT=${PORTAL_HOSTS_DIR:-/var/lib/portal-hosts}
# Outside STATE_ROOT, which the last `down` removes: a lock on it would be lost with it.
LOCK_FILE=${PORTAL_HOSTS_LOCK:-/run/lock/portal-hosts.lock}
SUBNET_PREFIX=10.243
READY_WITHIN=60
STOP_WITHIN=30
DAEMON_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)

die() {
  echo "second-host: $*" >&2
  exit "${EXIT_CODE:-1}"
}

usage() {
  sed -n '3,11p' "$SELF" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

check_name() {
  [[ $1 =~ ^[a-z][a-z0-9-]{0,23}$ ]] || die "NAME must match [a-z][a-z0-9-]{0,23}: '$1'"
}

# Everything about NAME that the commands share.
load() {
  NAME=$1
  STATE="$STATE_ROOT/$NAME"
  HASH=$(printf %s "$NAME" | sha1sum | cut -c1-8)
  VETH_OUT="vo$HASH"
  VETH_IN="vi$HASH"
  ANCHOR_FILE="$STATE/anchor.pid"
  LIBVIRTD_PIDFILE="$STATE/run/libvirtd.pid"
  VIRTLOGD_PIDFILE="$STATE/run/virtlogd.pid"
  if [ -f "$STATE/index" ]; then
    INDEX=$(cat "$STATE/index")
    ADDRESS="$SUBNET_PREFIX.$INDEX.2"
    PEER_ADDRESS="$SUBNET_PREFIX.$INDEX.1"
    URI="qemu+tcp://$ADDRESS/system"
  fi
}

# A live process (a zombie is not: it holds no namespace and no socket any more).
alive() {
  local pid=$1 stat
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

netns_inode() {
  stat -L -c %i "/run/netns/$NAME" 2>/dev/null
}

# True when PID lives in this host's network namespace: only then is it ours to signal.
in_our_netns() {
  local pid=$1 inode link
  inode=$(netns_inode) || return 1
  link=$(readlink "/proc/$pid/ns/net" 2>/dev/null) || return 1
  [ "$link" = "net:[$inode]" ]
}

read_pid() {
  local file=$1 pid
  [ -f "$file" ] || return 1
  pid=$(tr -dc 0-9 <"$file")
  [ -n "$pid" ] || return 1
  echo "$pid"
}

# The PID in FILE, if that process still runs in our namespace.
our_pid() {
  local pid
  pid=$(read_pid "$1") || return 1
  alive "$pid" && in_our_netns "$pid" || return 1
  echo "$pid"
}

# Signal PID, wait until it is gone; SIGKILL after STOP_WITHIN seconds.
stop_pid() {
  local pid=$1 signal=${2:-TERM} waited=0
  kill "-$signal" "$pid" 2>/dev/null || return 0
  while alive "$pid"; do
    if [ "$waited" -ge $((STOP_WITHIN * 10)) ]; then
      kill -KILL "$pid" 2>/dev/null || true
      waited=0
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

inside() {
  local anchor
  anchor=$(our_pid "$ANCHOR_FILE") || die "$NAME: its namespace anchor is not running"
  nsenter -t "$anchor" --mount --uts --net -- "${DAEMON_ENV[@]}" "$@"
}

answers() {
  [ "$(timeout 10 virsh -c "$URI" hostname 2>/dev/null)" = "$NAME" ]
}

wait_until_answering() {
  local began=$SECONDS
  until answers; do
    [ $((SECONDS - began)) -lt "$READY_WITHIN" ] || die "$NAME: libvirtd does not answer at $URI after ${READY_WITHIN}s (log: $STATE/log/libvirtd.log)"
    sleep 0.2
  done
}

start_libvirtd() {
  if our_pid "$LIBVIRTD_PIDFILE" >/dev/null; then
    return 0
  fi
  rm -f "$LIBVIRTD_PIDFILE"
  # -d returns once the daemon has initialised; TCP may take a moment more.
  inside libvirtd -d --listen -p /run/libvirt/libvirtd.pid </dev/null >/dev/null 2>&1 \
    || die "$NAME: libvirtd did not start (log: $STATE/log/libvirtd.log)"
  wait_until_answering
}

start_virtlogd() {
  if our_pid "$VIRTLOGD_PIDFILE" >/dev/null; then
    return 0
  fi
  rm -f "$VIRTLOGD_PIDFILE"
  inside virtlogd -d -p /run/libvirt/virtlogd.pid </dev/null >/dev/null 2>&1 || die "$NAME: virtlogd did not start"
  for _ in $(seq 1 100); do
    our_pid "$VIRTLOGD_PIDFILE" >/dev/null && return 0
    sleep 0.1
  done
  die "$NAME: virtlogd wrote no pid file"
}

stop_libvirtd() {
  local signal=${1:-TERM} pid
  if pid=$(our_pid "$LIBVIRTD_PIDFILE"); then
    stop_pid "$pid" "$signal"
  fi
  rm -f "$LIBVIRTD_PIDFILE"  # SIGKILL leaves it behind
}

report() {
  local anchor virtlogd libvirtd
  anchor=$(our_pid "$ANCHOR_FILE") || anchor=
  virtlogd=$(our_pid "$VIRTLOGD_PIDFILE") || virtlogd=
  libvirtd=$(our_pid "$LIBVIRTD_PIDFILE") || libvirtd=
  cat <<EOF | tee "$STATE/host.env"
NAME=$NAME
URI=$URI
ADDRESS=$ADDRESS
PEER_ADDRESS=$PEER_ADDRESS
POOL_DIR=$STATE/pool
STATE_DIR=$STATE
NETNS=$NAME
ANCHOR_PID=$anchor
VIRTLOGD_PID=$virtlogd
LIBVIRTD_PID=$libvirtd
EOF
}

is_up() {
  [ -f "$STATE/index" ] && our_pid "$ANCHOR_FILE" >/dev/null && our_pid "$VIRTLOGD_PIDFILE" >/dev/null \
    && our_pid "$LIBVIRTD_PIDFILE" >/dev/null
}

subnet_taken() {
  local index=$1
  local subnet="$SUBNET_PREFIX.$index.0/30"
  ip -4 -o addr show | grep -q " $SUBNET_PREFIX\.$index\.[0-9]*/" && return 0
  # A route into the /30 or one covering it (other than the default route).
  [ -n "$(ip -4 route show root "$subnet")" ] && return 0
  ip -4 route show match "$subnet" | grep -qv '^default' && return 0
  grep -qsx "$index" "$STATE_ROOT"/*/index
}

# The directories of SRC (not its files), with their owners and modes, under DST; none below
# the paths given as exceptions.
copy_dirs() {
  local src=$1 dst=$2 dir rel
  shift 2
  mkdir -p "$dst"
  chown --reference="$src" "$dst"
  chmod --reference="$src" "$dst"
  find "$src" -mindepth 1 -type d "$@" -print | while read -r dir; do
    rel=${dir#"$src"/}
    mkdir -p "$dst/$rel"
    chown --reference="$dir" "$dst/$rel"
    chmod --reference="$dir" "$dst/$rel"
  done
}

make_copies() {
  # /etc/libvirt without domains, networks, pools or secrets: the host starts empty.
  mkdir -p "$STATE/etc"
  cp -a /etc/libvirt/. "$STATE/etc/"
  rm -rf "$STATE"/etc/qemu/*.xml "$STATE"/etc/qemu/autostart "$STATE"/etc/qemu/networks/*.xml \
    "$STATE"/etc/qemu/networks/autostart/* "$STATE"/etc/storage/*.xml "$STATE"/etc/storage/autostart \
    "$STATE"/etc/secrets/*
  cat >"$STATE/etc/libvirtd.conf" <<EOF
# Written by second-host.sh for the test host $NAME: TCP without auth, on its own address only.
listen_tls = 0
listen_tcp = 1
listen_addr = "$ADDRESS"
auth_tcp = "none"
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
  copy_dirs /var/lib/libvirt "$STATE/lib" -not -path '/var/lib/libvirt/images/*' -not -path '*/domain-*'
  copy_dirs /var/log/libvirt "$STATE/log"
  copy_dirs /var/cache/libvirt "$STATE/cache"
  if [ -d /var/cache/libvirt/qemu/capabilities ]; then
    cp -a /var/cache/libvirt/qemu/capabilities/. "$STATE/cache/qemu/capabilities/"
  fi
  mkdir -p "$STATE/run" "$STATE/pool"
  chmod 755 "$STATE/run" "$STATE/pool"
}

start_anchor() {
  if our_pid "$ANCHOR_FILE" >/dev/null; then
    return 0
  fi
  rm -f "$ANCHOR_FILE"
  # The shell writes its own PID, then becomes the sleep: that PID holds the namespaces.
  # shellcheck disable=SC2016
  setsid ip netns exec "$NAME" unshare --mount --uts --propagation private \
    sh -c 'echo $$ >"$1"; exec sleep infinity' anchor "$ANCHOR_FILE" </dev/null >/dev/null 2>&1 &
  for _ in $(seq 1 100); do
    our_pid "$ANCHOR_FILE" >/dev/null && break
    sleep 0.05
  done
  local anchor
  anchor=$(our_pid "$ANCHOR_FILE") || die "$NAME: the namespace anchor did not start"
  local target
  for pair in etc:/etc/libvirt lib:/var/lib/libvirt run:/run/libvirt log:/var/log/libvirt cache:/var/cache/libvirt; do
    target=${pair#*:}
    nsenter -t "$anchor" --mount -- mount --bind "$STATE/${pair%%:*}" "$target" \
      || die "$NAME: cannot bind-mount $STATE/${pair%%:*} over $target"
  done
  nsenter -t "$anchor" --uts -- hostname "$NAME"
}

cmd_up() {
  [ $# -eq 2 ] || usage
  check_name "$1"
  [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le 254 ] || die "ADDR_INDEX must be 1..254: '$2'"
  load "$1"
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  for tool in ip nsenter unshare setsid libvirtd virtlogd virsh; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
  done
  if is_up && [ "$(cat "$STATE/index")" = "$2" ] && answers; then
    report
    return 0
  fi
  if [ -d "$STATE" ]; then
    cmd_down "$NAME" >/dev/null  # half up (or up with another index): start again from nothing
  fi
  mkdir -p "$(dirname "$LOCK_FILE")"
  (
    # One `up` at a time chooses its addresses; and no `down` removes the (empty) state root
    # between its mkdir and ours.
    flock 9
    mkdir -p "$STATE_ROOT"
    EXIT_CODE=3
    subnet_taken "$2" && die "$SUBNET_PREFIX.$2.0/30 is in use on this machine; try another ADDR_INDEX"
    mkdir "$STATE"
    echo "$2" >"$STATE/index"
  ) 9>"$LOCK_FILE"
  load "$NAME"
  if ! {
    ip netns add "$NAME" \
      && ip link add "$VETH_OUT" type veth peer name "$VETH_IN" netns "$NAME" \
      && ip addr add "$PEER_ADDRESS/30" dev "$VETH_OUT" \
      && ip link set "$VETH_OUT" up \
      && sysctl -qw "net.ipv4.conf.$VETH_OUT.forwarding=1" \
      && ip -n "$NAME" addr add "$ADDRESS/30" dev "$VETH_IN" \
      && ip -n "$NAME" link set "$VETH_IN" up \
      && ip -n "$NAME" link set lo up \
      && ip -n "$NAME" route add "$SUBNET_PREFIX.0.0/16" via "$PEER_ADDRESS"
  }; then
    cmd_down "$NAME" >/dev/null
    die "$NAME: could not make its network namespace"
  fi
  trap 'cmd_down "$NAME" >/dev/null 2>&1' EXIT
  make_copies
  start_anchor
  start_virtlogd
  start_libvirtd
  trap - EXIT
  report
}

cmd_down() {
  [ $# -eq 1 ] || usage
  check_name "$1"
  load "$1"
  if [ ! -d "$STATE" ]; then
    return 0  # never up, or down already: nothing here is ours
  fi
  local pid
  if pid=$(our_pid "$LIBVIRTD_PIDFILE"); then stop_pid "$pid"; fi
  if pid=$(our_pid "$VIRTLOGD_PIDFILE"); then stop_pid "$pid"; fi
  # What our libvirtd started and left running (guests, dnsmasq): in our namespace only.
  local anchor
  anchor=$(our_pid "$ANCHOR_FILE") || anchor=
  if netns_inode >/dev/null; then
    for pid in $(ip netns pids "$NAME" 2>/dev/null); do
      [ "$pid" = "$anchor" ] && continue
      in_our_netns "$pid" && stop_pid "$pid"
    done
  fi
  if [ -n "$anchor" ]; then stop_pid "$anchor"; fi
  ip netns del "$NAME" 2>/dev/null || true
  ip link del "$VETH_OUT" 2>/dev/null || true
  # Nothing is mounted under the state directory on this side (the binds live only in the
  # namespace that just died), so removing it removes files only.
  if findmnt -rn -o TARGET | grep -q "^$STATE\(/\|$\)"; then
    die "$NAME: something is mounted under $STATE; not removing it"
  fi
  rm -rf "$STATE"
  (flock 9 && rmdir "$STATE_ROOT" 2>/dev/null || true) 9>"$LOCK_FILE"
  echo "NAME=$NAME"
  echo "DOWN=1"
}

cmd_status() {
  [ $# -eq 1 ] || usage
  check_name "$1"
  load "$1"
  [ -d "$STATE" ] && [ -f "$STATE/index" ] || die "$NAME is not up"
  report
  is_up
}

cmd_stop_libvirtd() {
  [ $# -ge 1 ] && [ $# -le 2 ] || usage
  check_name "$1"
  load "$1"
  [ -f "$STATE/index" ] || die "$NAME is not up"
  local signal=TERM
  if [ "${2:-}" = "--kill" ]; then signal=KILL; elif [ -n "${2:-}" ]; then usage; fi
  stop_libvirtd "$signal"
  report
}

cmd_start_libvirtd() {
  [ $# -eq 1 ] || usage
  check_name "$1"
  load "$1"
  [ -f "$STATE/index" ] || die "$NAME is not up"
  start_virtlogd
  start_libvirtd
  report
}

cmd_restart_libvirtd() {
  [ $# -ge 1 ] && [ $# -le 2 ] || usage
  check_name "$1"
  load "$1"
  [ -f "$STATE/index" ] || die "$NAME is not up"
  local signal=TERM
  if [ "${2:-}" = "--kill" ]; then signal=KILL; elif [ -n "${2:-}" ]; then usage; fi
  our_pid "$LIBVIRTD_PIDFILE" >/dev/null || die "$NAME: its libvirtd is not running"
  stop_libvirtd "$signal"
  start_libvirtd
  report
}

cmd_fence() {
  [ $# -eq 1 ] || usage
  check_name "$1"
  load "$1"
  [ -f "$STATE/index" ] || die "$NAME is not up"
  local file pid
  for file in "$STATE"/run/qemu/*.pid; do
    [ -e "$file" ] || continue
    if pid=$(our_pid "$file"); then
      stop_pid "$pid" KILL
    fi
  done
}

cd /
command=${1:-}
[ -n "$command" ] || usage
shift
case "$command" in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  status) cmd_status "$@" ;;
  stop-libvirtd) cmd_stop_libvirtd "$@" ;;
  start-libvirtd) cmd_start_libvirtd "$@" ;;
  restart-libvirtd) cmd_restart_libvirtd "$@" ;;
  fence) cmd_fence "$@" ;;
  *) usage ;;
esac
