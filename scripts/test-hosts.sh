#!/usr/bin/env bash
# Prepares (or removes) the local "test hosts" that mitogen-rs's ssh/sudo/doas
# tests use: packages, test users, sudoers and doas rules, and two network
# namespaces for 2-hop tests. Must run as root; idempotent; reads no stdin.
#
#   scripts/test-hosts.sh setup      # install / create everything (safe to rerun)
#   scripts/test-hosts.sh teardown   # remove the namespaces, veths and route
#
# Users (each has a real password, since the test sshd runs with UsePAM no
# and refuses locked accounts even for key login):
#   mtg-key     key login only in tests       password mtg-key-unused-9f3
#   mtg-pw      password login                password mtg-pw-secret
#   mtg-sudo    sudo NOPASSWD to anyone;      password mtg-sudo-secret
#               doas nopass to root and mtg-target
#   mtg-sudopw  sudo/doas with password       password mtg-sudopw-secret
#   mtg-target  the "become" target           password mtg-target-secret
#   mtg-nosudo  in no sudoers / doas rule     password mtg-nosudo-secret
#
# Network (the whole 10.99.0.0/16 is first made unreachable in the root
# namespace, so no test packet can ever leave through the default route):
#   root ns  mtgv-r  10.99.1.1/24  <->  mtgv-a1 10.99.1.2/24  netns mtg-a
#   mtg-a    mtgv-a2 10.99.2.1/24  <->  mtgv-b  10.99.2.2/24  netns mtg-b
# mtg-a does not forward: the root namespace reaches 10.99.1.2 only, and
# 10.99.2.2 (mtg-b) is reachable only from inside mtg-a.
set -euo pipefail
exec </dev/null

# python3-apt: the play suite's `package` tasks run ansible-core's apt
# module; bsdutils: `script`, the pty its password-prompt test types into.
PACKAGES=(openssh-server openssh-client sudo opendoas iputils-ping iproute2 procps python3 python3-venv perl binutils zstd xz-utils acl python3-apt bsdutils)
USERS=(
    "mtg-key:mtg-key-unused-9f3"
    "mtg-pw:mtg-pw-secret"
    "mtg-sudo:mtg-sudo-secret"
    "mtg-sudopw:mtg-sudopw-secret"
    "mtg-target:mtg-target-secret"
    "mtg-nosudo:mtg-nosudo-secret"
)
SUDOERS=/etc/sudoers.d/mitogen-rs-tests
DOAS_CONF=/etc/doas.conf
DOAS_LINES=(
    "permit nopass mtg-sudo as root"
    "permit nopass mtg-sudo as mtg-target"
    "permit mtg-sudopw as root"
    "permit nopass root"
)
TEST_RANGE=10.99.0.0/16
NS_A=mtg-a
NS_B=mtg-b

die() { echo "test-hosts.sh: $*" >&2; exit 1; }
log() { echo "test-hosts.sh: $*" >&2; }

ns_exists() { [ -e "/run/netns/$1" ]; }
link_exists() { # [netns] name
    if [ $# -eq 2 ]; then
        ip -n "$1" link show dev "$2" >/dev/null 2>&1
    else
        ip link show dev "$1" >/dev/null 2>&1
    fi
}

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
}

create_users() {
    local entry user skel
    # An empty skeleton: test users' shells start clean (no rc files at all).
    skel=$(mktemp -d)
    for entry in "${USERS[@]}"; do
        user=${entry%%:*}
        if ! getent passwd "$user" >/dev/null; then
            useradd -m -k "$skel" -s /bin/bash "$user"
        fi
    done
    rmdir "$skel"
    printf '%s\n' "${USERS[@]}" | chpasswd
}

write_sudoers() {
    local tmp
    tmp=$(mktemp)
    cat >"$tmp" <<'EOF'
# mitogen-rs test users (written by scripts/test-hosts.sh; do not edit).
# No lecture and no cached credentials, so every password test sees the
# same prompt sequence.
Defaults:mtg-sudo, mtg-sudopw, mtg-nosudo lecture=never
Defaults:mtg-sudo, mtg-sudopw, mtg-nosudo timestamp_timeout=0
mtg-sudo ALL=(ALL:ALL) NOPASSWD: ALL
mtg-sudopw ALL=(ALL:ALL) ALL
EOF
    if ! visudo -qcf "$tmp" >/dev/null; then
        visudo -cf "$tmp" >&2 || true
        rm -f "$tmp"
        die "generated sudoers file is invalid"
    fi
    install -o root -g root -m 0440 "$tmp" "$SUDOERS"
    rm -f "$tmp"
    visudo -qc >/dev/null || die "sudoers as a whole fails visudo -c"
}

write_doas() {
    local line
    touch "$DOAS_CONF"
    for line in "${DOAS_LINES[@]}"; do
        grep -qxF "$line" "$DOAS_CONF" || printf '%s\n' "$line" >>"$DOAS_CONF"
    done
    chown root:root "$DOAS_CONF"
    chmod 0600 "$DOAS_CONF"
    doas -C "$DOAS_CONF" || die "$DOAS_CONF fails doas -C"
}

setup_network() {
    # Safety first: the whole test range is unreachable from the root
    # namespace unless a more specific (veth) route says otherwise.
    if ! ip route show type unreachable "$TEST_RANGE" | grep -q .; then
        ip route add unreachable "$TEST_RANGE"
    fi
    ns_exists "$NS_A" || ip netns add "$NS_A"
    ns_exists "$NS_B" || ip netns add "$NS_B"
    local ns
    for ns in "$NS_A" "$NS_B"; do
        ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=0
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.forwarding=0
        ip -n "$ns" link set lo up
    done

    # root <-> mtg-a
    if ! link_exists mtgv-r; then
        ip -n "$NS_A" link del mtgv-a1 2>/dev/null || true
        ip link add mtgv-r type veth peer name mtgv-a1 netns "$NS_A"
    fi
    link_exists "$NS_A" mtgv-a1 || die "mtgv-r exists but its peer mtgv-a1 is not in $NS_A (run teardown)"
    ip addr replace 10.99.1.1/24 dev mtgv-r
    ip -n "$NS_A" addr replace 10.99.1.2/24 dev mtgv-a1
    ip link set mtgv-r up
    ip -n "$NS_A" link set mtgv-a1 up

    # mtg-a <-> mtg-b
    if ! link_exists "$NS_A" mtgv-a2; then
        ip -n "$NS_B" link del mtgv-b 2>/dev/null || true
        ip -n "$NS_A" link add mtgv-a2 type veth peer name mtgv-b netns "$NS_B"
    fi
    link_exists "$NS_B" mtgv-b || die "mtgv-a2 exists but its peer mtgv-b is not in $NS_B (run teardown)"
    ip -n "$NS_A" addr replace 10.99.2.1/24 dev mtgv-a2
    ip -n "$NS_B" addr replace 10.99.2.2/24 dev mtgv-b
    ip -n "$NS_A" link set mtgv-a2 up
    ip -n "$NS_B" link set mtgv-b up
}

verify_network() {
    local ok=1 i
    # Fresh veths may take a moment to come up (DAD does not matter for v4).
    for i in 1 2 3 4 5; do
        ping -c1 -W1 -q 10.99.1.2 >/dev/null 2>&1 && break
        sleep 0.2
    done
    ping -c1 -W1 -q 10.99.1.2 >/dev/null 2>&1 \
        || { log "FAIL: root ns cannot reach 10.99.1.2 ($NS_A)"; ok=0; }
    ip netns exec "$NS_A" ping -c1 -W1 -q 10.99.2.2 >/dev/null 2>&1 \
        || { log "FAIL: $NS_A cannot reach 10.99.2.2 ($NS_B)"; ok=0; }
    ip netns exec "$NS_B" ping -c1 -W1 -q 10.99.2.1 >/dev/null 2>&1 \
        || { log "FAIL: $NS_B cannot reach 10.99.2.1 ($NS_A)"; ok=0; }
    if ping -c1 -W1 -q 10.99.2.2 >/dev/null 2>&1; then
        log "FAIL: root ns reaches 10.99.2.2 ($NS_B): it must not"; ok=0
    fi
    if ip netns exec "$NS_B" ping -c1 -W1 -q 10.99.1.1 >/dev/null 2>&1; then
        log "FAIL: $NS_B reaches 10.99.1.1 (root ns): it must not"; ok=0
    fi
    [ "$ok" = 1 ] || die "network check failed"
}

kill_ns_pids() {
    local ns=$1 pid
    ns_exists "$ns" || return 0
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

teardown() {
    # Processes left in a namespace (e.g. a test's sshd) would keep it, and
    # its veths, alive after `ip netns del`.
    kill_ns_pids "$NS_A"
    kill_ns_pids "$NS_B"
    ip link del mtgv-r 2>/dev/null || true
    ns_exists "$NS_A" && ip netns del "$NS_A"
    ns_exists "$NS_B" && ip netns del "$NS_B"
    # The route goes last: it guards the range while anything else exists.
    while ip route show type unreachable "$TEST_RANGE" | grep -q .; do
        ip route del unreachable "$TEST_RANGE"
    done
    echo "test-hosts: torn down netns $NS_A $NS_B, veths, unreachable route $TEST_RANGE (users, sudoers, doas.conf kept)"
}

setup() {
    install_packages
    create_users
    write_sudoers
    write_doas
    setup_network
    verify_network
    echo "test-hosts: ready: users mtg-{key,pw,sudo,sudopw,target,nosudo}; $SUDOERS; $DOAS_CONF; netns $NS_A (10.99.1.2, 10.99.2.1) and $NS_B (10.99.2.2, only via $NS_A); $TEST_RANGE unreachable otherwise"
}

[ "$(id -u)" = 0 ] || die "must run as root"
case "${1:-}" in
    setup) setup ;;
    teardown) teardown ;;
    *) echo "usage: $0 setup|teardown" >&2; exit 2 ;;
esac
