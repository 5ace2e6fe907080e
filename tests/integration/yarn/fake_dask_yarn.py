"""A stand-in for ``dask-yarn submit`` (put on the test's PATH as ``dask-yarn``).

It takes exactly the options of dask-yarn's ``submit`` command (dask_yarn/cli.py; anything else is an argparse error,
as with the real CLI) and does what dask-yarn does through skein, against the ResourceManager named in
``$HADOOP_CONF_DIR/yarn-site.xml``: an application of type ``skein`` with the name, queue and tags given (tags
split on commas and stripped, as dask-yarn does), one attempt (skein's default), the user from dask's ``yarn.user``
setting (``DASK_YARN__USER``) or the caller, the script localized into the container, and the script run with the
Python of ``--environment python://...`` (the real one runs it in the dask.client container, after the scheduler's;
here the AM container stands in for it). It prints the application id, as dask-yarn does, and records its argv in
``$TMPDIR/dask-yarn-argv.json`` so the test can check what reached the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from fake_spark_submit import call, rm_address


def parser() -> argparse.ArgumentParser:
    entry = argparse.ArgumentParser(prog="dask-yarn")
    subs = entry.add_subparsers(dest="command", required=True)
    submit = subs.add_parser("submit")
    submit.add_argument("script")
    submit.add_argument("args", nargs=argparse.REMAINDER)
    for name in ("--name", "--queue", "--tags", "--environment", "--deploy-mode", "--worker-memory",
                 "--client-memory", "--scheduler-memory"):  # fmt: skip
        submit.add_argument(name)
    for name in ("--worker-count", "--worker-vcores", "--worker-restarts", "--client-vcores", "--scheduler-vcores"):
        submit.add_argument(name, type=int)
    submit.add_argument("--worker-env", action="append")
    submit.add_argument("--client-env", action="append")
    return entry


def main(argv: list[str]) -> int:
    with open(os.path.join(tempfile.gettempdir(), "dask-yarn-argv.json"), "w") as out:
        json.dump(argv, out)
    args = parser().parse_args(argv)
    if not args.environment:
        print("ValueError: You must provide a path to a Python environment for the workers.", file=sys.stderr)
        return 1
    if not args.environment.startswith("python://"):
        print("dask-yarn: this stand-in only runs python:// environments", file=sys.stderr)
        return 1
    python = args.environment[len("python://") :]
    user = os.environ.get("DASK_YARN__USER") or os.environ.get("USER") or "dask"
    rm = rm_address()
    app_id = call("POST", f"{rm}/ws/v1/cluster/apps/new-application", user)["application-id"]
    staging = tempfile.mkdtemp(prefix=f"skein-{app_id}-")
    name = os.path.basename(args.script)
    shutil.copy(args.script, os.path.join(staging, name))
    resource = {"resource": "file://" + os.path.join(staging, name), "type": "FILE", "visibility": "APPLICATION"}
    tags = sorted({t.strip() for t in (args.tags or "").split(",") if t.strip()})
    command = " ".join([python, name, *args.args, "1><LOG_DIR>/stdout", "2><LOG_DIR>/stderr"])
    body = {
        "application-id": app_id, "application-name": args.name or "dask", "queue": args.queue or "default",
        "application-type": "skein", "application-tags": {"tag": tags}, "max-app-attempts": 1,
        "am-container-spec": {"local-resources": {"entry": [{"key": name, "value": resource}]},
                              "commands": {"command": command}},
        "resource": {"memory": 512, "vCores": 1},
    }  # fmt: skip
    call("POST", f"{rm}/ws/v1/cluster/apps", user, body)
    print(app_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
