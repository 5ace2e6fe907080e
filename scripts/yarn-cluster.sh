#!/bin/sh
# A real Hadoop YARN for the tests (one ResourceManager, one NodeManager: Hadoop's MiniYARNCluster), on loopback.
#
#   sh scripts/yarn-cluster.sh up      resolve Hadoop (cached), start the cluster, print its pid and the env lines
#   sh scripts/yarn-cluster.sh env     print the env lines of the running cluster (HADOOP_CONF_DIR, GP_YARN_ENDPOINT)
#   sh scripts/yarn-cluster.sh down    stop the cluster and the containers it started, by pid
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
HADOOP=$CACHE/hadoop-$VERSION
JARS=$HADOOP/share/hadoop/common/lib
EXPIRY_MS=${GP_YARN_AM_EXPIRY_MS:-20000}
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
    say "fetching Hadoop $VERSION (minicluster) from Maven Central into $HADOOP"
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

running() { [ -f "$RUN/pid" ] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null; }

env_lines() {
    echo "HADOOP_CONF_DIR=$RUN/conf"
    echo "GP_YARN_ENDPOINT=$(cat "$RUN/conf/ready")"
    echo "GP_YARN_AM_EXPIRY_MS=$EXPIRY_MS"
    echo "GP_YARN_HADOOP_HOME=$HADOOP"
}

up() {
    if running; then
        say "already running (pid $(cat "$RUN/pid"))"
        env_lines
        return 0
    fi
    command -v java >/dev/null || { say "Java is needed: apt-get install default-jdk-headless"; exit 1; }
    resolve
    compile
    rm -rf "$RUN"
    mkdir -p "$RUN/conf" "$RUN/work"
    # The NodeManager's containers inherit this environment: Hadoop's layout (the AM of REST submission finds its
    # jars there, as on an install) and the clients' configuration.
    (
        cd "$RUN/work"
        export HADOOP_HOME="$HADOOP" HADOOP_COMMON_HOME="$HADOOP" HADOOP_HDFS_HOME="$HADOOP" \
            HADOOP_YARN_HOME="$HADOOP" HADOOP_MAPRED_HOME="$HADOOP" HADOOP_CONF_DIR="$RUN/conf"
        JAVA_HOME=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}
        export JAVA_HOME
        # shellcheck disable=SC2086
        exec setsid java -Xmx768m $OPENS -Dgp.yarn.amExpiryMs="$EXPIRY_MS" \
            -cp "$RUN/conf:$CLASSES:$JARS/*" MiniYarn "$RUN/conf" "$RUN/work" >"$RUN/cluster.log" 2>&1 </dev/null
    ) &
    echo $! >"$RUN/pid"
    deadline=$(($(date +%s) + ${GP_YARN_UP_TIMEOUT:-180}))
    while [ ! -f "$RUN/conf/ready" ]; do
        if ! running; then
            say "the cluster exited while starting; the end of $RUN/cluster.log:"
            tail -n 30 "$RUN/cluster.log" >&2
            exit 1
        fi
        if [ "$(date +%s)" -gt "$deadline" ]; then
            say "not ready after ${GP_YARN_UP_TIMEOUT:-180} s; the end of $RUN/cluster.log:"
            tail -n 30 "$RUN/cluster.log" >&2
            down
            exit 1
        fi
        sleep 0.5
    done
    say "up: pid $(cat "$RUN/pid"), ResourceManager $(cat "$RUN/conf/ready")"
    env_lines
}

down() {
    [ -f "$RUN/pid" ] || { say "not running"; return 0; }
    pid=$(cat "$RUN/pid")
    # The containers' process groups (the NodeManager writes each container's pid under its work folder).
    containers=$(find "$RUN/work" -name '*.pid' -path '*nmPrivate*' -exec cat {} + 2>/dev/null || true)
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"  # the shutdown hook stops the NodeManager, which stops its containers
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    for c in $containers; do kill -KILL -- "-$c" 2>/dev/null || true; done
    rm -f "$RUN/pid" "$RUN/conf/ready"
    say "down (pid $pid)"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    env) running && env_lines || { say "not running"; exit 1; } ;;
    resolve) resolve && compile ;;
    *) echo "usage: $0 up|down|env|resolve" >&2; exit 2 ;;
esac
