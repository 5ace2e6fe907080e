#!/bin/sh
# A real Hadoop YARN for the tests: Hadoop's own ResourceManager and NodeManager, one JVM each, on loopback.
#
#   sh scripts/yarn-cluster.sh up      resolve Hadoop (cached), start the cluster, print its pid and the env lines
#   sh scripts/yarn-cluster.sh env     print the env lines of the running cluster (HADOOP_CONF_DIR, GP_YARN_ENDPOINT)
#   sh scripts/yarn-cluster.sh down    stop the cluster and the containers it started, by pid
#   sh scripts/yarn-cluster.sh restart-rm   stop the ResourceManager and start it again (it recovers its applications)
#   sh scripts/yarn-cluster.sh failover     with GP_YARN_HA=1 (an RM pair, rm1 active): stop rm1, make rm2 active
#   sh scripts/yarn-cluster.sh resolve only fetch Hadoop and compile tests/yarn_cluster/MiniYarn.java (cached)
#
# Hadoop's jars come from Maven Central (tests/yarn_cluster/pom.xml pins the version, that of the Hadoop client in
# the pinned pyspark) into $GP_YARN_CACHE (~/.cache/gp-yarn), laid out like an install (share/hadoop/common/lib), so
# that containers find them through Hadoop's default yarn.application.classpath. The cluster's state (its
# configuration for clients, work folders, log, pid) lives in $GP_YARN_RUN ($GP_YARN_CACHE/run).
set -eu
cd "$(dirname "$0")/.."
HERE=$(pwd)/tests/yarn_cluster
CACHE=${GP_YARN_CACHE:-$HOME/.cache/gp-yarn}
RUN=${GP_YARN_RUN:-$CACHE/run}
VERSION=$(sed -n 's:.*<hadoop.version>\(.*\)</hadoop.version>.*:\1:p' "$HERE/pom.xml")
# The cached install is keyed by the pom's hash: a changed pom resolves again.
HADOOP=$CACHE/hadoop-$VERSION-$(sha256sum "$HERE/pom.xml" | cut -c1-8)
JARS=$HADOOP/share/hadoop/common/lib
# 45 s: short enough to wait out three times in a test, long enough for Spark's AM, which registers only once the
# driver (here the kernel) has made its SparkContext (about 20 s on a busy 2-core machine).
EXPIRY_MS=${GP_YARN_AM_EXPIRY_MS:-45000}
# GP_YARN_HA=1: two ResourceManagers, rm1 (active) and rm2 (standby), failed over by hand (no ZooKeeper here).
if [ "${GP_YARN_HA:-}" = 1 ]; then RMS="rm1 rm2"; else RMS="rm"; fi
# Hadoop 3.5 on Java 17 reflects into these packages.
OPENS="--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
--add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
--add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED
--add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
--add-opens=java.base/sun.net.dns=ALL-UNNAMED --add-opens=java.base/sun.security.x509=ALL-UNNAMED"

say() { echo "== yarn-cluster: $*" >&2; }

resolve() {
    [ -f "$HADOOP/.complete" ] && return 0
    command -v mvn >/dev/null || { say "Maven (mvn) is needed to fetch Hadoop $VERSION: apt-get install maven"; exit 1; }
    say "fetching Hadoop $VERSION (ResourceManager, NodeManager) from Maven Central into $HADOOP"
    rm -rf "$HADOOP"
    mkdir -p "$JARS"
    mvn -B -q -f "$HERE/pom.xml" -Dmaven.repo.local="$CACHE/m2" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$JARS" >&2
    touch "$HADOOP/.complete"
}

compile() {
    # The class is cached by the hash of its source.
    sum=$(sha256sum "$HERE/MiniYarn.java" | cut -c1-16)
    CLASSES=$CACHE/classes-$sum
    if [ ! -f "$CLASSES/MiniYarn.class" ]; then
        command -v javac >/dev/null || { say "javac is needed: apt-get install default-jdk-headless"; exit 1; }
        mkdir -p "$CLASSES.tmp"
        javac -nowarn -d "$CLASSES.tmp" -cp "$JARS/*" "$HERE/MiniYarn.java"
        rm -rf "$CLASSES" && mv "$CLASSES.tmp" "$CLASSES"
    fi
}

pid_of() { cat "$RUN/$1.pid" 2>/dev/null || true; }
alive() { p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
# Running: the NodeManager and an RM (of a pair, one is enough: after a failover rm1 is gone).
running() {
    alive nm || return 1
    for r in $RMS; do alive "$r" && return 0; done
    return 1
}

env_lines() {
    echo "HADOOP_CONF_DIR=$RUN/conf"
    echo "GP_YARN_ENDPOINT=$(cat "$RUN/conf/endpoint")"
    echo "GP_YARN_AM_EXPIRY_MS=$EXPIRY_MS"
    echo "GP_YARN_HADOOP_HOME=$HADOOP"
    echo "GP_YARN_RM_REQUEST_LOG=$RUN/rm-requests.log"
}

# One running node, as the RM sees it.
node_running() {
    python3 - "$(cut -d, -f1 "$RUN/conf/endpoint")" <<'PY'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/ws/v1/cluster/nodes", timeout=5) as reply:
        nodes = (json.load(reply).get("nodes") or {}).get("node") or []
except OSError:
    sys.exit(1)
sys.exit(0 if any(n.get("state") == "RUNNING" for n in nodes) else 1)
PY
}

up() {
    if running; then
        say "already running"
        env_lines
        return 0
    fi
    down >/dev/null 2>&1 || true
    command -v java >/dev/null || { say "Java is needed: apt-get install default-jdk-headless"; exit 1; }
    resolve
    compile
    rm -rf "$RUN"
    mkdir -p "$RUN/conf" "$RUN/work"
    java -XX:TieredStopAtLevel=1 -cp "$CLASSES:$JARS/*" -Dgp.yarn.amExpiryMs="$EXPIRY_MS" \
        -Dgp.yarn.ha="$([ "$RMS" = rm ] && echo false || echo true)" \
        MiniYarn conf "$RUN/conf" "$RUN/work" >"$RUN/conf.log" 2>&1
    # The NodeManager's containers inherit this environment: Hadoop's layout (the AM of REST submission finds its
    # jars there, as on an install) and the clients' configuration.
    export HADOOP_HOME="$HADOOP" HADOOP_COMMON_HOME="$HADOOP" HADOOP_HDFS_HOME="$HADOOP" \
        HADOOP_YARN_HOME="$HADOOP" HADOOP_MAPRED_HOME="$HADOOP" HADOOP_CONF_DIR="$RUN/conf"
    JAVA_HOME=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}
    export JAVA_HOME
    for role in $RMS nm; do start_role "$role"; done
    if [ "$RMS" != rm ]; then
        until [ -f "$RUN/conf/rm1.ready" ] || ! alive rm1; do sleep 0.5; done
        transition rm1
    fi
    wait_ready
    say "up: ResourceManager $(cat "$RUN/conf/endpoint") (pids $(for r in $RMS; do pid_of "$r"; done)), NodeManager (pid $(pid_of nm))"
    env_lines
}

# Start one service (rm, nm) in the background; the configuration comes first on its classpath (yarn-site.xml,
# capacity-scheduler.xml, log4j.properties).
start_role() {
    rm -f "$RUN/conf/$1.ready"
    case $1 in rm1 | rm2) set -- "$1" rm "$1" ;; *) set -- "$1" "$1" "" ;; esac
    # shellcheck disable=SC2086
    (cd "$RUN/work" && exec setsid java -Xmx512m -XX:TieredStopAtLevel=1 $OPENS -cp "$RUN/conf:$CLASSES:$JARS/*" \
        MiniYarn "$2" "$RUN/conf" "$RUN/work" $3 >>"$RUN/$1.log" 2>&1 </dev/null) &
    echo $! >"$RUN/$1.pid"
}

# Make one RM of the pair active (Hadoop's own admin client).
transition() {
    # shellcheck disable=SC2086
    java -XX:TieredStopAtLevel=1 $OPENS -cp "$RUN/conf:$JARS/*" org.apache.hadoop.yarn.client.cli.RMAdminCLI \
        -transitionToActive --forceactive "$1" >>"$RUN/admin.log" 2>&1 || { say "cannot make $1 active: see $RUN/admin.log"; exit 1; }
}

failover() {
    [ "$RMS" != rm ] || { say "failover needs GP_YARN_HA=1"; exit 2; }
    running || { say "not running"; exit 1; }
    compile
    stop_pid "$(pid_of rm1)"
    transition rm2
    say "failed over: rm1 stopped, rm2 active"
}

wait_ready() {
    deadline=$(($(date +%s) + ${GP_YARN_UP_TIMEOUT:-180}))
    until [ -f "$RUN/conf/nm.ready" ] && node_running; do
        for role in $RMS nm; do
            if ! alive $role; then
                say "the $role exited while starting; the end of $RUN/$role.log:"
                tail -n 30 "$RUN/$role.log" >&2
                down
                exit 1
            fi
        done
        if [ "$(date +%s)" -gt "$deadline" ]; then
            say "not ready after ${GP_YARN_UP_TIMEOUT:-180} s; see $RUN/rm.log and $RUN/nm.log"
            down
            exit 1
        fi
        sleep 0.5
    done
}

restart_rm() {
    running || { say "not running"; exit 1; }
    compile
    [ "$RMS" = rm ] || { say "restart-rm is for a single RM (use failover with GP_YARN_HA=1)"; exit 2; }
    stop_pid "$(pid_of rm)"
    start_role rm
    wait_ready
    say "ResourceManager restarted (pid $(pid_of rm))"
}

stop_pid() {
    kill -TERM "$1" 2>/dev/null || return 0
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
    kill -KILL "$1" 2>/dev/null || true
}

down() {
    [ -f "$RUN/nm.pid" ] || [ -f "$RUN/rm.pid" ] || [ -f "$RUN/rm1.pid" ] || { say "not running"; return 0; }
    # The containers' process groups (the NodeManager writes each container's pid under its work folder).
    containers=$(find "$RUN/work" -name '*.pid' -path '*nmPrivate*' -exec cat {} + 2>/dev/null || true)
    nm=$(pid_of nm)
    [ -z "$nm" ] || stop_pid "$nm"  # its shutdown hook stops the containers
    pids=$nm
    for r in rm rm1 rm2; do
        p=$(pid_of $r)
        [ -z "$p" ] || { stop_pid "$p"; pids="$pids $p"; }
        rm -f "$RUN/$r.pid" "$RUN/conf/$r.ready"
    done
    for c in $containers; do kill -KILL -- "-$c" 2>/dev/null || true; done
    rm -f "$RUN/nm.pid" "$RUN/conf/nm.ready"
    say "down (pids $pids)"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    env) if running; then env_lines; else say "not running"; exit 1; fi ;;
    restart-rm) restart_rm ;;
    failover) failover ;;
    resolve) resolve && compile ;;
    *) echo "usage: $0 up|down|env|restart-rm|failover|resolve" >&2; exit 2 ;;
esac
