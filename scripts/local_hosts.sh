#!/usr/bin/env bash
# Real hosts on one machine, for cluster-local.yaml and tests/test_cluster_hosts.py.
#
#   scripts/local_hosts.sh up [N]     N hosts (2 or 3; default 2), each reachable by SSH
#   scripts/local_hosts.sh down       every host stopped; no process, namespace, bridge,
#                                     mount or address is left behind
#   scripts/local_hosts.sh status     what is up
#   scripts/local_hosts.sh kill I     host I lost: every process on it SIGKILLed at once
#   scripts/local_hosts.sh pids I     the machine-wide pids of every process on host I
#
# Host I (1-based) is network namespace rdhostI with address 10.213.7.I/24 on a bridge
# (rdbr0, 10.213.7.254 in this machine's own namespace, so that `ray up` and the tests
# reach the hosts). Host 1 is the head of cluster-local.yaml. Each host runs sshd as the
# first process of a PID namespace of its own (so `ray stop` on one host never sees
# another's processes, and killing that first process ends the whole host at once), in a
# mount namespace of its own where /tmp, /home/rdhost (the home of the SSH user root) and
# /dev/shm are the host's own, /shared is one folder every host mounts (NFS on real
# machines) and /opt/raydiff-venv is this project's Python environment (read-only).
#
# The namespaces have no default route: a host reaches loopback and 10.213.7.0/24, nothing
# else. Root only. State (keys, per-host folders, logs) lives in $RAYDIFF_HOSTS_DIR
# (default /var/tmp/raydiff-hosts); `down` removes it except /shared, kept for inspection
# until the next `up` (`down --purge` removes that too).
set -euo pipefail

NET=10.213.7
BRIDGE=rdbr0
STATE=${RAYDIFF_HOSTS_DIR:-/var/tmp/raydiff-hosts}
VENV_MOUNT=/opt/raydiff-venv
HOME_MOUNT=/home/rdhost      # root's home on every host (this machine's /root stays as it is)
HERE=$(cd "$(dirname "$0")/.." && pwd)
VENV=${RAYDIFF_VENV:-$HERE/.venv}
MAX_HOSTS=3

die() { echo "local_hosts: $*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (it creates network namespaces, a bridge and mounts); try: sudo $0 $*"
    for tool in ip unshare nsenter ssh-keygen; do
        command -v $tool >/dev/null || die "$tool is missing (Debian: apt-get install iproute2 util-linux openssh-client)"
    done
    [ -x /usr/sbin/sshd ] || die "/usr/sbin/sshd is missing (Debian: apt-get install openssh-server)"
}

# the machine-wide pid of host I's first process (sshd, pid 1 of the host's PID namespace)
init_pid() {
    local f=$STATE/h$1/unshare.pid
    [ -f "$f" ] || return 1
    local parent; parent=$(cat "$f")
    [ -d /proc/$parent ] || return 1
    # unshare --fork waits for its one child, the host's pid 1
    local child; child=$(cat /proc/$parent/task/$parent/children 2>/dev/null | awk '{print $1}')
    [ -n "$child" ] || return 1
    echo "$child"
}

# every machine-wide pid whose PID namespace is host I's
host_pids() {
    local init; init=$(init_pid "$1") || return 0
    local ns; ns=$(readlink /proc/$init/ns/pid) || return 0
    for p in /proc/[0-9]*; do
        [ "$(readlink $p/ns/pid 2>/dev/null)" = "$ns" ] && echo "${p#/proc/}"
    done
    return 0
}

check_block_free() {
    # the block must be used by nothing else here (our own bridge aside)
    if ip -o addr show | grep -v " $BRIDGE " | grep -q " $NET\."; then
        die "$NET.0/24 is already in use on this machine: $(ip -o addr show | grep " $NET\." | head -1)"
    fi
    if ip route show | grep -v "dev $BRIDGE" | grep -q "^$NET\."; then
        die "a route for $NET.0/24 already exists here: $(ip route show | grep "^$NET\." | head -1)"
    fi
}

make_keys() {
    mkdir -p "$STATE"
    chmod 700 "$STATE"
    [ -f "$STATE/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C raydiff-local-hosts -f "$STATE/id_ed25519"
    [ -f "$STATE/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C raydiff-local-host -f "$STATE/host_ed25519"
    cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys"
    chmod 600 "$STATE/authorized_keys"
}

write_sshd_config() {   # host index
    local i=$1
    cat > "$STATE/h$i/sshd_config" <<EOF
ListenAddress $NET.$i
Port 22
HostKey $STATE/host_ed25519
AuthorizedKeysFile $STATE/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PidFile none
AllowTcpForwarding yes
MaxSessions 64
MaxStartups 64
LogLevel ERROR
Subsystem sftp internal-sftp
EOF
}

start_host() {   # host index
    local i=$1 ns=rdhost$1 veth=rdv$1
    if init_pid "$i" >/dev/null; then
        echo "host $i ($NET.$i) is up"
        return 0
    fi
    mkdir -p "$STATE/h$i/home" "$STATE/shared"
    # a fresh /tmp, as after a reboot (the home folder survives, as a disk does)
    rm -rf "$STATE/h$i/tmp"
    mkdir -p "$STATE/h$i/tmp"
    chmod 1777 "$STATE/h$i/tmp" "$STATE/shared"
    write_sshd_config "$i"
    # the host's root has its own home; /root itself stays visible (Python may live there)
    awk -F: -v OFS=: -v home="$HOME_MOUNT" '$1 == "root" {$6 = home} {print}' /etc/passwd \
        > "$STATE/h$i/passwd"
    if ! ip netns list | grep -qw "$ns"; then
        ip netns add "$ns"
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$BRIDGE" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$NET.$i/24" dev eth0
        ip -n "$ns" link set eth0 up
    fi
    # mount points on this machine's disk (empty; `down` removes them)
    mkdir -p /run/sshd "$VENV_MOUNT" "$HOME_MOUNT" /shared
    # pid 1 of the host: sshd, after the host's own mounts. --propagation private keeps
    # these mounts inside the host.
    ip netns exec "$ns" unshare --pid --fork --mount-proc --mount --propagation private \
        bash -c '
            set -e
            # the environment first: it may itself live under /tmp (a CI clone)
            mount --bind "$3" "$4" && mount -o remount,bind,ro "$4"
            mount --bind "$1/h$2/tmp" /tmp
            mount --bind "$1/h$2/home" "$5"
            mount --bind "$1/h$2/passwd" /etc/passwd
            mount -t tmpfs -o size=2g,mode=1777 tmpfs /dev/shm
            mount --bind "$1/shared" /shared
            # its scripts name their Python by the original path: show it there too
            case "$3" in /tmp/*) mkdir -p "$3" && mount --bind "$4" "$3" ;; esac
            exec /usr/sbin/sshd -D -e -f "$1/h$2/sshd_config"
        ' host "$STATE" "$i" "$(readlink -f "$VENV")" "$VENV_MOUNT" "$HOME_MOUNT" \
        >>"$STATE/h$i/sshd.log" 2>&1 </dev/null 9>&- &
    echo $! > "$STATE/h$i/unshare.pid"
    # ready when sshd answers with its banner
    local tries=0
    until timeout 2 bash -c "exec 3<>/dev/tcp/$NET.$i/22; head -c 4 <&3" 2>/dev/null | grep -q SSH; do
        tries=$((tries + 1))
        [ $tries -lt 50 ] || die "sshd on host $i did not answer; its log: $(tail -5 "$STATE/h$i/sshd.log")"
        sleep 0.2
    done
    echo "host $i up: ssh -i $STATE/id_ed25519 root@$NET.$i"
}

up() {
    local n=${1:-2}
    [[ "$n" =~ ^[23]$ ]] || die "up takes 2 or 3 hosts, not '$n'"
    [ -x "$VENV/bin/python" ] || die "no Python environment at $VENV (make install, or set RAYDIFF_VENV)"
    exec 9>/run/raydiff-hosts.lock
    flock -n 9 || die "another local_hosts.sh is running"
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        check_block_free
        ip link add "$BRIDGE" type bridge
        ip addr add "$NET.254/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
    fi
    make_keys
    for i in $(seq 1 "$n"); do start_host "$i"; done
}

kill_host() {   # host index: every process at once (SIGKILL to pid 1 of its PID namespace)
    local init; init=$(init_pid "$1") || { echo "host $1 is not running"; return 0; }
    kill -KILL "$init"
    local tries=0
    while [ -n "$(host_pids "$1")" ] && [ $tries -lt 100 ]; do sleep 0.1; tries=$((tries + 1)); done
    wait_unshare "$1"
    echo "host $1 killed"
}

wait_unshare() {
    local f=$STATE/h$1/unshare.pid
    [ -f "$f" ] || return 0
    local p; p=$(cat "$f")
    local tries=0
    while [ -d /proc/$p ] && [ $tries -lt 50 ]; do sleep 0.1; tries=$((tries + 1)); done
    [ -d /proc/$p ] && kill -KILL "$p" 2>/dev/null || true
    rm -f "$f"
}

down() {
    for i in $(seq 1 $MAX_HOSTS); do
        kill_host "$i" >/dev/null
        ip netns list | grep -qw "rdhost$i" && ip netns delete "rdhost$i"
        ip link show "rdv$i" >/dev/null 2>&1 && ip link delete "rdv$i"
    done
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
    for point in "$VENV_MOUNT" "$HOME_MOUNT" /shared; do
        [ -d "$point" ] && rmdir "$point" 2>/dev/null || true
    done
    if [ -d "$STATE" ]; then
        find "$STATE" -mindepth 1 -maxdepth 1 ! -name shared -exec rm -rf {} +
        [ "${1:-}" = --purge ] && rm -rf "$STATE"
    fi
    rm -f /run/raydiff-hosts.lock
    echo "local hosts down"
}

status() {
    local any=0
    for i in $(seq 1 $MAX_HOSTS); do
        if init_pid "$i" >/dev/null; then
            any=1
            echo "host $i: $NET.$i up, $(host_pids "$i" | wc -l) processes"
        elif ip netns list | grep -qw "rdhost$i"; then
            any=1
            echo "host $i: $NET.$i down (namespace kept; 'up' restarts it)"
        fi
    done
    [ $any = 1 ] || echo "no local hosts"
    ip link show "$BRIDGE" >/dev/null 2>&1 && echo "bridge $BRIDGE: $NET.254" || true
}

cmd=${1:-}
shift || true
case "$cmd" in
    up) need_root; up "$@" ;;
    down) need_root; down "$@" ;;
    status) need_root; status ;;
    kill) need_root; [[ "${1:-}" =~ ^[123]$ ]] || die "kill takes a host number"; kill_host "$1" ;;
    pids) need_root; [[ "${1:-}" =~ ^[123]$ ]] || die "pids takes a host number"; host_pids "$1" ;;
    *) die "usage: $0 up [2|3] | down [--purge] | status | kill I | pids I" ;;
esac
