#!/usr/bin/env bash
# Bring up a one-node SLURM on this machine for the tests (idempotent).
#
# Installs Debian's slurmctld, slurmd, slurm-client and munge when missing (needs
# root and apt-get), writes /etc/slurm/slurm.conf for `hostname -s` with CPUs=8
# (oversubscribed, so 4-8 task jobs run on a 2-core machine), starts munged,
# slurmctld and slurmd when they are not running, and waits until `sinfo` shows
# the node idle. Recipe: /work/shared/slurm/README.md.
#
# Exit status: 0 ready; 3 SLURM cannot be brought up here (the reason is the
# last line on stderr, which tests/slurm/conftest.py shows when it skips).
set -u

fail() {
    echo "start_slurm: $*" >&2
    exit 3
}

HOST="$(hostname -s)" || fail "hostname -s failed"
CONF=/etc/slurm/slurm.conf
WAIT_SECONDS="${SLURM_START_WAIT:-60}"

node_state() {
    sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n 1
}

is_running() {  # pidfile -> true when that process is alive
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
    local missing=()
    local bin
    for bin in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/sbin/munged; do
        [[ -x "$bin" ]] || missing+=("$bin")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ "$(id -u)" -eq 0 ]] || fail "SLURM is not installed (${missing[*]} missing) and installing it needs root; run as root or install slurmctld slurmd slurm-client munge"
    command -v apt-get >/dev/null || fail "SLURM is not installed and apt-get is not available to install it"
    echo "start_slurm: installing slurmctld slurmd slurm-client munge" >&2
    apt-get update -qq >/tmp/start_slurm_apt.log 2>&1 \
        || fail "apt-get update failed (see /tmp/start_slurm_apt.log)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge \
        >>/tmp/start_slurm_apt.log 2>&1 \
        || fail "apt-get install slurmctld slurmd slurm-client munge failed (see /tmp/start_slurm_apt.log)"
}

write_config() {
    local wanted
    wanted="ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SlurmctldLogFile=/var/log/slurmctld.log
SlurmdLogFile=/var/log/slurmd.log
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AuthInfo=cred_expire=10
SlurmdParameters=config_overrides
NodeName=$HOST CPUs=8 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP"
    mkdir -p /etc/slurm
    if [[ "$(cat "$CONF" 2>/dev/null)" != "$wanted" ]]; then
        printf '%s\n' "$wanted" >"$CONF" || fail "cannot write $CONF"
        CONFIG_CHANGED=1
    fi
}

start_munge() {
    mkdir -p /run/munge /var/log/munge /etc/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null \
            || fail "cannot write /etc/munge/munge.key"
    fi
    chown -R munge:munge /etc/munge /run/munge /var/log/munge || fail "no munge user (is munge installed?)"
    chmod 400 /etc/munge/munge.key
    if ! is_running /run/munge/munged.pid; then
        runuser -u munge -- /usr/sbin/munged || fail "munged did not start (see /var/log/munge/munged.log)"
    fi
}

start_slurm_daemons() {
    mkdir -p /var/spool/slurmctld /var/spool/slurmd
    if ! is_running /run/slurmctld.pid; then
        /usr/sbin/slurmctld || fail "slurmctld did not start (see /var/log/slurmctld.log)"
    elif [[ -n "${CONFIG_CHANGED:-}" ]]; then
        scontrol reconfigure || fail "scontrol reconfigure failed after rewriting $CONF"
    fi
    if ! is_running /run/slurmd.pid; then
        /usr/sbin/slurmd || fail "slurmd did not start (see /var/log/slurmd.log)"
    fi
}

wait_idle() {
    local deadline=$((SECONDS + WAIT_SECONDS)) state=""
    while ((SECONDS < deadline)); do
        state="$(node_state)"
        case "$state" in
            idle | mixed | allocated) return 0 ;;
            down* | drain* | drained*)
                scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 ;;
        esac
        sleep 1
    done
    fail "node $HOST not idle after ${WAIT_SECONDS}s (sinfo state: '${state:-none}'; see /var/log/slurmctld.log and /var/log/slurmd.log)"
}

main() {
    if command -v sinfo >/dev/null && [[ "$(node_state)" =~ ^(idle|mixed|allocated)$ ]]; then
        echo "start_slurm: already up on $HOST"
        return 0
    fi
    install_packages
    [[ "$(id -u)" -eq 0 ]] || fail "starting munged/slurmctld/slurmd needs root"
    write_config
    start_munge
    start_slurm_daemons
    wait_idle
    echo "start_slurm: up on $HOST ($(sinfo -h -o '%P %a %T %N' | head -n 1))"
}

main "$@"
