"""A stand-in for ``spark-submit --master yarn --deploy-mode cluster`` (put on the test's PATH as ``spark-submit``).

It does what Spark's YARN client does for a Python application, through the ResourceManager named in
``$HADOOP_CONF_DIR/yarn-site.xml``: asks for an application id, localizes the primary resource and ``--files``
(``path#alias``) into a staging folder, and submits an application of type SPARK whose AM command runs the primary
file with ``spark.yarn.appMasterEnv.*`` in its environment, tags from ``spark.yarn.tags``, the queue, the name, and
the proxy user as the application's user. With ``waitAppCompletion=false`` it exits once submitted.

Test knobs (as --conf, like any Spark setting): ``spark.fake.registerDelay=<s>`` registers the application late;
``spark.fake.fail=<message>`` fails like a bad submission.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET


def rm_address() -> str:
    conf = os.path.join(os.environ.get("HADOOP_CONF_DIR", ""), "yarn-site.xml")
    for prop in ET.parse(conf).getroot().iter("property"):
        if prop.findtext("name") == "yarn.resourcemanager.webapp.address":
            return "http://" + str(prop.findtext("value"))
    raise SystemExit("spark-submit: yarn.resourcemanager.webapp.address is not set in " + conf)


def call(method: str, url: str, user: str, body: object = None) -> dict:
    sep = "&" if "?" in url else "?"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}{sep}user.name={user}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read()
    return json.loads(text) if text else {}


def main(argv: list[str]) -> int:
    opts: dict[str, str] = {}
    conf: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("--"):
        key, value = argv[i], argv[i + 1]
        if key == "--conf":
            k, _, v = value.partition("=")
            conf[k] = v
        else:
            opts[key] = value
        i += 2
    primary, app_args = argv[i], argv[i + 1 :]
    if opts.get("--master") != "yarn" or opts.get("--deploy-mode") != "cluster":
        print("spark-submit: this stand-in only does --master yarn --deploy-mode cluster", file=sys.stderr)
        return 1
    if "spark.fake.fail" in conf:
        print(f'Exception in thread "main" org.apache.spark.SparkException: {conf["spark.fake.fail"]}')
        return 1
    user = opts.get("--proxy-user") or os.environ.get("USER") or "spark"
    rm = rm_address()
    app_id = call("POST", f"{rm}/ws/v1/cluster/apps/new-application", user)["application-id"]
    staging = tempfile.mkdtemp(prefix=f"sparkStaging-{app_id}-")
    resources = []
    for spec in [primary, *filter(None, opts.get("--files", "").split(","))]:
        path, _, alias = spec.partition("#")
        alias = alias or os.path.basename(path)
        shutil.copy(path, os.path.join(staging, alias))
        resources.append({"key": alias, "value": {"resource": "file://" + os.path.join(staging, alias),
                                                  "type": "FILE", "visibility": "APPLICATION"}})  # fmt: skip
    env = {k[len("spark.yarn.appMasterEnv.") :]: v for k, v in conf.items() if k.startswith("spark.yarn.appMasterEnv.")}
    python = env.get("PYSPARK_PYTHON", "python3")
    command = " ".join([python, os.path.basename(primary), *app_args, "1><LOG_DIR>/stdout", "2><LOG_DIR>/stderr"])
    body = {
        "application-id": app_id, "application-name": opts.get("--name", primary),
        "queue": opts.get("--queue", "default"),
        "application-type": "SPARK",
        "application-tags": {"tag": [t for t in conf.get("spark.yarn.tags", "").split(",") if t]},
        "max-app-attempts": int(conf.get("spark.yarn.maxAppAttempts", "2")),
        "am-container-spec": {"local-resources": {"entry": resources}, "commands": {"command": command},
                              "environment": {"entry": [{"key": k, "value": v} for k, v in env.items()]}},
        "resource": {"memory": 1024, "vCores": 1},
    }  # fmt: skip
    delay = float(conf.get("spark.fake.registerDelay", "0"))
    if delay:
        time.sleep(delay)  # the scenario under test: YARN learns of the application late
    call("POST", f"{rm}/ws/v1/cluster/apps", user, body)
    print(f"INFO Client: Submitted application {app_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
