#!/bin/sh
# Apache Toree (the Scala kernel the older package shipped) and the Spark it runs on, from PyPI, in a cached virtualenv:
# Toree 0.5.0 is built for Scala 2.12, which Spark 3.5 is the last to use, so pyspark is pinned to 3.5 (its jars are the
# Spark distribution). Prints TOREE_SPARK_HOME=, TOREE_JAR= and TOREE_PYTHON=. The first run downloads ~350 MB.
#
# Usage: scripts/toree.sh            (GP_TOREE_CACHE, default ~/.cache/gp-toree, holds the virtualenv)
set -eu
PYSPARK=3.5.7
TOREE=0.5.0
CACHE=${GP_TOREE_CACHE:-$HOME/.cache/gp-toree}
VENV="$CACHE/venv-$PYSPARK-$TOREE"
if [ ! -f "$VENV/.complete" ]; then
    echo "toree.sh: installing pyspark $PYSPARK and toree $TOREE into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q "pyspark==$PYSPARK" "toree==$TOREE" >&2
    touch "$VENV/.complete"
fi
SITE=$("$VENV/bin/python" -c 'import os, pyspark; print(os.path.dirname(os.path.dirname(pyspark.__file__)))')
echo "TOREE_SPARK_HOME=$SITE/pyspark"
echo "TOREE_JAR=$(ls "$SITE"/toree/lib/toree-assembly-*.jar | head -n 1)"
echo "TOREE_PYTHON=$VENV/bin/python"
