#!/usr/bin/env bash
# A real SLURM test cluster on this machine, for CI and for trying profiles/slurm.
#
#   bash profiles/slurm/localcluster.sh start [--nodes N]  # install if needed, start, wait for srun
#   bash profiles/slurm/localcluster.sh status   # exit 0 when srun works on every node
#   bash profiles/slurm/localcluster.sh stop     # stop only what this script started
#   bash profiles/slurm/localcluster.sh env      # print `export SLURM_CONF=...` and the dask
#                                                # interface (`export M2M_SLURM_INTERFACE=...`)
#
# Default: 3 compute nodes (node1..node3), each in its own network namespace (m2m-node1..3)
# with its own address on a private bridge; the controller (munged, a private MariaDB +
# slurmdbd so sacct works, slurmctld) and the "login" side (sbatch, snakemake, the dask
# scheduler) stay in the root namespace, on the bridge address:
#
#     root namespace (controller + login)        m2m-nodeN namespaces (compute)
#     bridge m2m0 10.77.0.1/24  <---- veth ---->  m2m0 10.77.0.1N/24   slurmd -N nodeN
#
# The bridge and every node's veth end share one name (m2m0, like ib0 on a real cluster), so
# one dask `interface: m2m0` fits the scheduler (login side or a job) and the workers (jobs).
# All namespaces share the filesystem (network namespaces only): configs, spool, logs, the
# munge socket and the workflow. Each node has CPUs=<nproc> and RealMemory=<85% of RAM>, the
# same on every node: the nodes share this machine, so 3 nodes oversubscribe it 3x (fine for
# tests; jobs spread over nodes, CR_LLN). Partitions: `cpu` (all nodes, default) and `gpu` (the
# last node); one fake GPU on that node (gres gpu:ci:1, File=/dev/null).
#
# --nodes 1 (or M2M_SLURM_NODES=1): the single node `localhost` (127.0.0.1, no namespaces),
# partitions cpu and gpu on it; the dask interface is then `lo`.
#
# State, configs, logs and pid files live in $M2M_SLURM_DIR (default /tmp/m2m-slurm).
# /etc/slurm/slurm.conf is symlinked to the generated config only when that file does not exist,
# so plain `sinfo`/`sbatch` work too.
#
# Environment: M2M_SLURM_DIR, M2M_SLURM_NODES (3), M2M_SLURM_DB_PORT (13306),
# M2M_SLURM_PORTS (base port, 16817: slurmctld, +1 slurmd (the same on every node: each has its
# own address), +2 slurmdbd), M2M_SLURM_ACCOUNT (account created for root, m2m),
# M2M_SLURM_SUBNET (first three octets of the private /24, 10.77.0), M2M_SLURM_IFACE (bridge and
# node interface name, m2m0), M2M_SLURM_NODE_MEM (RealMemory per node in MB),
# M2M_SLURMD_TIMEOUT (seconds without an answer before slurmctld declares a node DOWN and
# fails its jobs with NODE_FAIL, 20; SLURM's default is 300), M2M_SLURM_NO_INSTALL=1 (never
# apt-get).
set -euo pipefail

D="${M2M_SLURM_DIR:-/tmp/m2m-slurm}"
DB_PORT="${M2M_SLURM_DB_PORT:-13306}"
BASE_PORT="${M2M_SLURM_PORTS:-16817}"
ACCOUNT="${M2M_SLURM_ACCOUNT:-m2m}"
CLUSTER=m2m
ETC="$D/etc" RUN="$D/run" LOG="$D/log" SPOOL="$D/spool"
export SLURM_CONF="$ETC/slurm.conf"
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
MUNGE_SOCKET=/run/munge/munge.socket.2
LAYOUT="$ETC/layout"  # the node layout of the generated configs (read by status/stop/env)

say() { echo "localcluster: $*" >&2; }

die() {  # die MESSAGE [LOGFILE...]: print the tail of each log, exit 1
    local msg=$1
    shift
    say "ERROR: $msg"
    local f
    for f in "$@"; do
        if [[ -f $f ]]; then
            echo "----- tail of $f -----" >&2
            tail -n 40 "$f" >&2
        fi
    done
    exit 1
}

wait_for() {  # wait_for SECONDS CMD...: retry CMD every 0.2 s
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# --- layout: how many nodes, their names, addresses and namespaces -------------------------
# NODES, IFACE, SUBNET, CTL_ADDR, NODE_NAMES[], NODE_ADDRS[], NODE_NS[] ("" = root namespace)
set_layout() {  # set_layout NODES [SUBNET IFACE]
    NODES=$1
    SUBNET=${2:-${M2M_SLURM_SUBNET:-10.77.0}}
    IFACE=${3:-${M2M_SLURM_IFACE:-m2m0}}
    [[ $NODES =~ ^[1-9][0-9]?$ ]] || die "--nodes must be 1..99, not '$NODES'"
    [[ $SUBNET =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "M2M_SLURM_SUBNET must be like 10.77.0"
    ((${#IFACE} <= 15)) || die "M2M_SLURM_IFACE '$IFACE' is longer than 15 characters"
    NODE_NAMES=() NODE_ADDRS=() NODE_NS=()
    if ((NODES == 1)); then
        CTL_ADDR=127.0.0.1 IFACE=lo
        NODE_NAMES=(localhost) NODE_ADDRS=(127.0.0.1) NODE_NS=("")
    else
        CTL_ADDR=$SUBNET.1
        local i
        for ((i = 1; i <= NODES; i++)); do
            NODE_NAMES+=("node$i") NODE_ADDRS+=("$SUBNET.$((10 + i))") NODE_NS+=("m2m-node$i")
        done
    fi
    GPU_NODE=${NODE_NAMES[NODES - 1]}
}

load_layout() {  # the layout of the generated configs, else the requested one
    if [[ -s $LAYOUT ]]; then
        local nodes subnet iface
        read -r nodes subnet iface <"$LAYOUT"
        set_layout "$nodes" "$subnet" "$iface"
    else
        set_layout "$REQ_NODES"
    fi
}

node_list() {  # slurm hostlist of all nodes: localhost or node[1-3]
    if ((NODES == 1)); then echo localhost; else echo "node[1-$NODES]"; fi
}

# --- pid files: a daemon is "ours" when its pid file is in $RUN and the process lives --------
pid_alive() {  # pid_alive NAME [COMM]: the pid in $RUN/NAME.pid runs a process called COMM*
    local f="$RUN/$1.pid" comm_want=${2:-$1} pid comm
    [[ -s $f ]] || return 1
    pid=$(tr -dc 0-9 <"$f")
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    comm=$(cat "/proc/$pid/comm")
    [[ $comm == "$comm_want"* ]]
}

stop_daemons() {  # stop_daemons NAME[:COMM]...: TERM all at once, then KILL, the $RUN/NAME.pid
    local spec name comm pid pids=() names=()
    for spec in "$@"; do
        name=${spec%%:*} comm=${spec#*:}
        if pid_alive "$name" "$comm"; then
            pid=$(tr -dc 0-9 <"$RUN/$name.pid")
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid") names+=("$name")
        fi
        rm -f "$RUN/$name.pid"
    done
    local i deadline=$((SECONDS + 10))
    for i in "${!pids[@]}"; do
        while [[ -d /proc/${pids[i]} ]] && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if [[ -d /proc/${pids[i]} ]]; then
            say "${names[i]} (${pids[i]}) ignored SIGTERM; sending SIGKILL"
            kill -KILL "${pids[i]}" 2>/dev/null || true
        fi
        say "stopped ${names[i]} (${pids[i]})"
    done
}

# --- installation --------------------------------------------------------------------------
need_root() {
    [[ $(id -u) == 0 ]] || die "must run as root (the daemons, namespaces and apt-get need it)"
}

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    ((NODES == 1)) || command -v ip >/dev/null || missing+=(iproute2)
    ((${#missing[@]} == 0)) && return 0
    [[ ${M2M_SLURM_NO_INSTALL:-0} == 1 ]] && die "missing packages: ${missing[*]}"
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get"
    say "installing ${missing[*]} (apt-get)"
    mkdir -p "$LOG"
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -y -q -o DPkg::Lock::Timeout=300)
    if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >"$LOG/apt.log" 2>&1; then
        "${apt[@]}" update >>"$LOG/apt.log" 2>&1 || true
        "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$LOG/apt.log" 2>&1 ||
            die "apt-get install failed" "$LOG/apt.log"
    fi
}

# --- network: a bridge in the root namespace, one namespace + veth per node ----------------
ns_exists() { [[ -e /run/netns/$1 ]]; }

net_ok() {  # every node namespace has its address and reaches the controller address
    ((NODES == 1)) && return 0
    local i
    for ((i = 0; i < NODES; i++)); do
        ns_exists "${NODE_NS[i]}" || return 1
        ip -n "${NODE_NS[i]}" -4 addr show dev "$IFACE" 2>/dev/null |
            grep -q "inet ${NODE_ADDRS[i]}/" || return 1
    done
    ip -4 addr show dev "$IFACE" 2>/dev/null | grep -q "inet $CTL_ADDR/"
}

net_up() {
    ((NODES == 1)) && return 0
    local out="$LOG/net.log" i ns host
    : >"$out"
    local clash  # the private /24 must not be in use on another interface
    clash=$(ip -4 -o addr show | awk -v s="$SUBNET." -v d="$IFACE" \
        '$2 != d && index($4, s) == 1 {print $2, $4}')
    clash+=$(ip -4 route show | awk -v s="$SUBNET." -v d="$IFACE" \
        'index($1, s) == 1 && $0 !~ (" dev " d " ") {print}')
    [[ -z $clash ]] ||
        die "$SUBNET.0/24 is already used here ($clash): pick another M2M_SLURM_SUBNET"
    netcmd() { "$@" >>"$out" 2>&1 || die "cannot set up the node network: $*" "$out"; }
    if ! ip link show dev "$IFACE" >/dev/null 2>&1; then
        netcmd ip link add "$IFACE" type bridge
        echo "$IFACE" >"$RUN/bridge"
    fi
    if [[ ! -s $RUN/bridge ]]; then  # adopt a bridge left by an earlier run (state dir gone)
        if ! ip -d link show dev "$IFACE" | grep -qw bridge ||
            ip -4 -o addr show dev "$IFACE" | grep -v " $CTL_ADDR/24 " | grep -q inet; then
            die "interface $IFACE exists and was not made by this script: set M2M_SLURM_IFACE"
        fi
        echo "$IFACE" >"$RUN/bridge"
    fi
    netcmd ip addr replace "$CTL_ADDR/24" dev "$IFACE"
    netcmd ip link set "$IFACE" up
    for ((i = 0; i < NODES; i++)); do
        ns=${NODE_NS[i]} host="m2m-n$((i + 1))"
        ns_exists "$ns" || netcmd ip netns add "$ns"
        if ! ip link show dev "$host" >/dev/null 2>&1; then
            netcmd ip link add "$host" type veth peer name "$IFACE" netns "$ns"
        fi
        netcmd ip link set "$host" master "$IFACE" up
        netcmd ip -n "$ns" link set lo up
        netcmd ip -n "$ns" addr replace "${NODE_ADDRS[i]}/24" dev "$IFACE"
        netcmd ip -n "$ns" link set "$IFACE" up
    done
}

ns_live_pids() {  # ns_live_pids NS: processes in a namespace, zombies left out
    local pid
    for pid in $(ip netns pids "$1" 2>/dev/null); do
        [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) =~ ^[^ZX]$ ]] && echo "$pid"
    done
    return 0
}

ns_kill() {  # ns_kill NS: end what is left in a node namespace (jobs of our slurmd)
    local ns=$1 pids sig
    ns_exists "$ns" || return 0
    for sig in TERM KILL; do
        pids=$(ns_live_pids "$ns" | tr '\n' ' ')
        [[ -n ${pids// /} ]] || return 0
        say "sending SIG$sig to what is left in $ns: $pids"
        # shellcheck disable=SC2086
        kill -"$sig" $pids 2>/dev/null || true
        local deadline=$((SECONDS + 5))
        while [[ -n $(ns_live_pids "$ns") ]] && ((SECONDS < deadline)); do
            sleep 0.2
        done
    done
}

cancel_jobs() {  # cancel_jobs [WHY]: cancel every job of this cluster (all are ours), wait a bit
    pid_alive slurmctld || return 0
    local jobs
    jobs=$(timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ') || return 0
    [[ -n ${jobs// /} ]] || return 0
    say "cancelling jobs ${1:+$1 }$jobs"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while [[ -n $(timeout 10 squeue -h -o %i 2>/dev/null) ]] && ((SECONDS < deadline)); do
        sleep 0.5
    done
}

net_down() {
    ((NODES == 1)) && return 0
    local i ns
    for ((i = 0; i < NODES; i++)); do
        ns=${NODE_NS[i]}
        ns_kill "$ns"
        ip link del "m2m-n$((i + 1))" 2>/dev/null || true
        if ns_exists "$ns"; then
            ip netns del "$ns" || say "cannot delete netns $ns"
            say "removed netns $ns"
        fi
    done
    if [[ -s $RUN/bridge ]]; then
        ip link del "$(cat "$RUN/bridge")" 2>/dev/null || true
        say "removed bridge $(cat "$RUN/bridge")"
        rm -f "$RUN/bridge"
    fi
}

in_node() {  # in_node I CMD...: run CMD in node I's network namespace (single node: here)
    local i=$1
    shift
    if [[ -n ${NODE_NS[i]} ]]; then
        nsenter --net="/run/netns/${NODE_NS[i]}" "$@"
    else
        "$@"
    fi
}

# --- configuration -------------------------------------------------------------------------
db_password() {
    local f="$ETC/db.password"
    if [[ ! -s $f ]]; then
        (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$f")
    fi
    cat "$f"
}

write_configs() {
    mkdir -p "$ETC" "$RUN" "$LOG" "$SPOOL/ctld"
    chmod 755 "$D"
    local cpus mem i nodes select=CR_Core_Memory
    cpus=$(nproc)
    mem=${M2M_SLURM_NODE_MEM:-$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.85}' /proc/meminfo)}
    nodes=$(node_list)
    ((NODES == 1)) || select=CR_Core_Memory,CR_LLN  # spread jobs over the nodes
    {
        cat <<EOF
# Generated by profiles/slurm/localcluster.sh: $NODES-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=localhost($CTL_ADDR)
SlurmctldPort=$BASE_PORT
SlurmdPort=$((BASE_PORT + 1))
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d-%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=$select
SchedulerType=sched/backfill
MinJobAge=300
ReturnToService=2
KillWait=5
SlurmdTimeout=${M2M_SLURMD_TIMEOUT:-20}
InactiveLimit=0
MailProg=/bin/true
DefMemPerCPU=1000
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$CTL_ADDR
AccountingStoragePort=$((BASE_PORT + 2))
AccountingStorageTRES=gres/gpu
GresTypes=gpu
EOF
        for ((i = 0; i < NODES; i++)); do
            local gres=""
            [[ ${NODE_NAMES[i]} == "$GPU_NODE" ]] && gres=" Gres=gpu:ci:1"
            echo "NodeName=${NODE_NAMES[i]} NodeAddr=${NODE_ADDRS[i]} CPUs=$cpus" \
                "RealMemory=$mem$gres State=UNKNOWN"
        done
        cat <<EOF
PartitionName=cpu Nodes=$nodes Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$GPU_NODE MaxTime=INFINITE State=UP
EOF
    } >"$ETC/slurm.conf"
    cat >"$ETC/gres.conf" <<EOF
# Fake GPU: jobs asking for --gpus=1 get CUDA_VISIBLE_DEVICES=0 (no device behind it).
NodeName=$GPU_NODE Name=gpu Type=ci File=/dev/null
EOF
    cat >"$ETC/cgroup.conf" <<EOF
# Unused (ProctrackType=proctrack/linuxproc, TaskPlugin=task/none); kept for completeness.
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
EOF
    local pw
    pw=$(db_password)
    (
        umask 077
        cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$((BASE_PORT + 2))
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$pw
StorageLoc=slurm_acct_db
EOF
    )
    chmod 600 "$ETC/slurmdbd.conf"
    for ((i = 0; i < NODES; i++)); do
        mkdir -p "$SPOOL/d-${NODE_NAMES[i]}"
    done
    echo "$NODES $SUBNET $IFACE" >"$LAYOUT"
    if [[ ! -e /etc/slurm/slurm.conf && ! -L /etc/slurm/slurm.conf ]]; then
        mkdir -p /etc/slurm
        ln -s "$ETC/slurm.conf" /etc/slurm/slurm.conf
        echo "/etc/slurm/slurm.conf" >"$RUN/etc-link"
    fi
}

# --- daemons -------------------------------------------------------------------------------
munge_ok() { munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

start_munge() {
    if ! munge_ok; then  # ours or the system's: either works
        [[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create >/dev/null 2>&1 ||
            die "cannot create /etc/munge/munge.key"
        install -d -o munge -g munge -m 755 /run/munge
        install -d -o munge -g munge -m 700 /var/log/munge
        install -d -o munge -g munge -m 711 /var/lib/munge
        rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
        runuser -u munge -- /usr/sbin/munged --force \
            --log-file=/var/log/munge/munged.log --pid-file=/run/munge/munged.pid ||
            die "munged did not start" /var/log/munge/munged.log
        wait_for 10 munge_ok || die "munge does not answer" /var/log/munge/munged.log
        cp /run/munge/munged.pid "$RUN/munged.pid"
        say "started munged"
    fi
    # the nodes use the same munged: its socket is a file, shared by every network namespace
    local i
    for ((i = 0; i < NODES; i++)); do
        [[ -n ${NODE_NS[i]} ]] || continue
        in_node "$i" bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'" \
            >/dev/null 2>"$LOG/munge-${NODE_NAMES[i]}.log" ||
            die "munge does not work in netns ${NODE_NS[i]}" "$LOG/munge-${NODE_NAMES[i]}.log"
    done
}

db() { mariadb --no-defaults --socket="$RUN/mysqld.sock" -uroot "$@"; }

start_mariadb() {
    if ! pid_alive mariadbd; then
        if [[ ! -d $D/mysql/mysql ]]; then
            rm -rf "$D/mysql"
            mariadb-install-db --no-defaults --datadir="$D/mysql" --user=root \
                --auth-root-authentication-method=socket --skip-test-db \
                >"$LOG/mariadb-install.log" 2>&1 ||
                die "mariadb-install-db failed" "$LOG/mariadb-install.log"
        fi
        rm -f "$RUN/mysqld.sock"
        setsid mariadbd --no-defaults --datadir="$D/mysql" --user=root \
            --socket="$RUN/mysqld.sock" --port="$DB_PORT" --bind-address=127.0.0.1 \
            --pid-file="$RUN/mariadbd.pid" --log-error="$LOG/mariadb.log" \
            --skip-name-resolve --skip-log-bin --innodb-buffer-pool-size=128M \
            --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
            </dev/null >>"$LOG/mariadb.log" 2>&1 &
        local pid=$! deadline=$((SECONDS + 30))
        until db -e "SELECT 1" >/dev/null 2>&1; do
            [[ -d /proc/$pid ]] || die "mariadbd exited" "$LOG/mariadb.log"
            ((SECONDS < deadline)) || die "mariadbd does not answer" "$LOG/mariadb.log"
            sleep 0.2
        done
        wait_for 5 pid_alive mariadbd || die "mariadbd wrote no pid file" "$LOG/mariadb.log"
        say "started mariadbd (port $DB_PORT)"
    fi
    local pw
    pw=$(db_password)
    db -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
           CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
           ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
           GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" 2>>"$LOG/mariadb.log" ||
        die "cannot create the slurm database user" "$LOG/mariadb.log"
}

start_slurmdbd() {
    pid_alive slurmdbd && return 0
    slurmdbd >>"$LOG/slurmdbd.out" 2>&1 || die "slurmdbd did not start" "$LOG/slurmdbd.log" \
        "$LOG/slurmdbd.out"
    wait_for 30 sacctmgr -n show cluster || die "slurmdbd does not answer" "$LOG/slurmdbd.log"
    say "started slurmdbd"
}

start_slurmctld() {
    pid_alive slurmctld && return 0
    slurmctld -f "$SLURM_CONF" >>"$LOG/slurmctld.out" 2>&1 ||
        die "slurmctld did not start" "$LOG/slurmctld.log" "$LOG/slurmctld.out"
    wait_for 30 scontrol ping || die "slurmctld does not answer" "$LOG/slurmctld.log"
    say "started slurmctld"
}

cluster_registered() { sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; }

add_account() {
    wait_for 20 cluster_registered ||
        die "slurmctld did not register cluster $CLUSTER in slurmdbd" "$LOG/slurmctld.log" \
            "$LOG/slurmdbd.log"
    if ! sacctmgr -n -P show assoc user=root account="$ACCOUNT" format=account |
        grep -qx "$ACCOUNT"; then
        sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=m2m Organization=m2m \
            >/dev/null 2>&1 || true
        sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null ||
            die "cannot add user root to account $ACCOUNT" "$LOG/slurmdbd.log"
    fi
}

node_ready() { sinfo -h -n "$1" -o %T | grep -Eq '^(idle|mixed|allocated|completing)'; }

start_slurmd() {  # start_slurmd I: slurmd -N <name> in node I's namespace and hostname
    local i=$1
    local name=${NODE_NAMES[i]}
    if ! pid_alive "slurmd-$name" slurmd; then
        if [[ -n ${NODE_NS[i]} ]]; then
            local msg="$name (${NODE_ADDRS[i]}, netns ${NODE_NS[i]}) cannot reach slurmctld"
            in_node "$i" timeout 5 bash -c "exec 3<>/dev/tcp/$CTL_ADDR/$BASE_PORT" 2>/dev/null ||
                die "$msg at $CTL_ADDR:$BASE_PORT" "$LOG/net.log" "$LOG/slurmctld.log"
            # own network namespace and own hostname (UTS namespace); the same filesystem and
            # mounts (nsenter, not `ip netns exec`, which remounts /sys without cgroups)
            # shellcheck disable=SC2016  # $1 and $2 expand in the inner bash
            in_node "$i" unshare --uts bash -c \
                'hostname "$1" && exec slurmd -N "$1" -f "$2"' slurmd "$name" "$SLURM_CONF" \
                >>"$LOG/slurmd-$name.out" 2>&1 ||
                die "slurmd on $name did not start" "$LOG/slurmd-$name.log" \
                    "$LOG/slurmd-$name.out"
        else
            slurmd -N "$name" -f "$SLURM_CONF" >>"$LOG/slurmd-$name.out" 2>&1 ||
                die "slurmd did not start" "$LOG/slurmd-$name.log" "$LOG/slurmd-$name.out"
        fi
        say "started slurmd on $name (${NODE_ADDRS[i]}${NODE_NS[i]:+, netns ${NODE_NS[i]}})"
    fi
}

wait_node() {  # wait_node I: node I is up in slurmctld's view
    local name=${NODE_NAMES[$1]}
    if ! wait_for 30 node_ready "$name"; then
        scontrol update nodename="$name" state=resume >/dev/null 2>&1 || true
        wait_for 10 node_ready "$name" || die "node $name is $(sinfo -h -n "$name" -o %T)" \
            "$LOG/slurmd-$name.log" "$LOG/slurmctld.log"
    fi
}

srun_ok() {  # one task on every node, each reporting the node it ran on
    local got want
    want=$(printf '%s\n' "${NODE_NAMES[@]}" | sort)
    # shellcheck disable=SC2016  # expands in the job
    got=$(timeout 30 srun -Q -N"$NODES" -n"$NODES" --ntasks-per-node=1 -t 1 \
        bash -c 'echo $SLURMD_NODENAME' 2>/dev/null | sort) || return 1
    [[ $got == "$want" ]]
}

daemons_alive() {
    pid_alive slurmctld && pid_alive slurmdbd || return 1
    local name
    for name in "${NODE_NAMES[@]}"; do
        pid_alive "slurmd-$name" slurmd || return 1
    done
}

# --- commands ------------------------------------------------------------------------------
cmd_status() {
    load_layout
    local ok=0 name i
    for name in munged mariadbd slurmdbd slurmctld; do
        if pid_alive "$name"; then
            say "$name: running (pid $(tr -dc 0-9 <"$RUN/$name.pid"))"
        elif [[ $name == munged ]] && munge_ok; then
            say "munged: running (not started by this script)"
        else
            say "$name: not running"
            ok=1
        fi
    done
    for ((i = 0; i < NODES; i++)); do
        name=${NODE_NAMES[i]}
        if pid_alive "slurmd-$name" slurmd; then
            say "slurmd on $name (${NODE_ADDRS[i]}${NODE_NS[i]:+, netns ${NODE_NS[i]}}):" \
                "running (pid $(tr -dc 0-9 <"$RUN/slurmd-$name.pid"))"
        else
            say "slurmd on $name: not running"
            ok=1
        fi
    done
    if ! net_ok; then
        say "network ($IFACE $CTL_ADDR, netns ${NODE_NS[*]}): MISSING"
        ok=1
    fi
    if ! { command -v srun >/dev/null && [[ -f $SLURM_CONF ]] && srun_ok; }; then
        say "srun on $(node_list): FAILS"
        return 1
    fi
    say "srun on $(node_list): ok"
    return $ok
}

cmd_start() {
    need_root
    [[ -f /etc/debian_version ]] || die "needs Debian or Ubuntu (apt)"
    if [[ -s $LAYOUT ]] && daemons_alive_layout; then
        load_layout
        local msg="a $NODES-node cluster runs ($D): stop it first (bash $0 stop)"
        ((NODES == REQ_NODES)) || die "$msg to start one with $REQ_NODES node(s)"
    else
        set_layout "$REQ_NODES"
    fi
    install_packages
    if [[ -f $SLURM_CONF ]] && command -v srun >/dev/null && daemons_alive && net_ok &&
        srun_ok; then
        say "already running ($D, $NODES node(s))"
        return 0
    fi
    local t0=$SECONDS i
    mkdir -p "$RUN" "$LOG"
    # configs are regenerated only when no slurm daemon of ours runs
    local cold=0
    daemons_alive_layout || { cold=1 && write_configs; }
    net_up
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurmctld
    add_account
    for ((i = 0; i < NODES; i++)); do
        start_slurmd "$i"
    done
    for ((i = 0; i < NODES; i++)); do
        wait_node "$i"
    done
    # no slurmd of ours ran: jobs restored from slurmctld's saved state died with them
    ((cold == 0)) || cancel_jobs "left from a cluster that died:"
    local logs=("$LOG/slurmctld.log")
    for i in "${NODE_NAMES[@]}"; do logs+=("$LOG/slurmd-$i.log"); done
    wait_for 30 srun_ok || die "srun does not work on every node of $(node_list)" "${logs[@]}"
    say "ready in $((SECONDS - t0)) s: nodes $(node_list) (${NODE_ADDRS[*]}), partitions" \
        "cpu (default), gpu ($GPU_NODE, gres gpu:ci:1); account $ACCOUNT; dask interface" \
        "$IFACE ($CTL_ADDR); SLURM_CONF=$SLURM_CONF"
}

daemons_alive_layout() {  # any slurm daemon of ours runs (for the layout on disk)
    pid_alive slurmctld || pid_alive slurmdbd || pid_alive slurmd && return 0
    local f
    for f in "$RUN"/slurmd-*.pid; do
        [[ -e $f ]] || continue
        f=${f##*/}
        pid_alive "${f%.pid}" slurmd && return 0
    done
    return 1
}

cmd_stop() {
    load_layout
    cancel_jobs
    local name f nodes=()
    for f in "$RUN"/slurmd-*.pid "$RUN"/slurmd.pid; do  # every node's slurmd (and older ones)
        [[ -e $f ]] || continue
        f=${f##*/}
        nodes+=("${f%.pid}:slurmd")
    done
    ((${#nodes[@]} == 0)) || stop_daemons "${nodes[@]}"
    for name in slurmctld slurmdbd mariadbd munged; do
        stop_daemons "$name"
    done
    net_down
    if [[ -f $RUN/etc-link ]]; then
        local link
        link=$(cat "$RUN/etc-link")
        [[ -L $link && $(readlink "$link") == "$ETC/slurm.conf" ]] && rm -f "$link"
        rm -f "$RUN/etc-link"
    fi
}

cmd_env() {
    load_layout
    echo "export SLURM_CONF=$SLURM_CONF"
    echo "export M2M_SLURM_INTERFACE=$IFACE"  # the dask `interface` that reaches every node
}

CMD=${1:-}
shift || true
REQ_NODES=${M2M_SLURM_NODES:-3}
while (($#)); do
    case $1 in
        --nodes) REQ_NODES=${2:-}; shift 2 || true ;;
        --nodes=*) REQ_NODES=${1#*=}; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

case "$CMD" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop && cmd_start ;;
    env) cmd_env ;;
    *)
        echo "usage: $0 start|stop|status|restart|env [--nodes N]" >&2
        exit 2
        ;;
esac
