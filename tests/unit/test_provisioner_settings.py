"""Operator settings read from the server's environment: a bad value fails in one line that names the variable."""

from __future__ import annotations

import pytest
from jupyter_client.kernelspec import KernelSpec
from traitlets import TraitError

from gateway_provisioners.provisioners.docker import DockerProvisioner
from gateway_provisioners.provisioners.kubernetes import KubernetesProvisioner
from gateway_provisioners.provisioners.yarn import YarnProvisioner


def make(cls: type, **config: object) -> object:
    spec = KernelSpec(argv=["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"], display_name="t")
    return cls(kernel_id="k1", kernel_spec=spec, parent=None, **config)


@pytest.mark.parametrize(
    ("cls", "variable", "value", "trait", "message"),
    [
        (KubernetesProvisioner, "GP_KERNEL_UID", "alice", "kernel_uid", "GP_KERNEL_UID='alice' is not a whole number"),
        (KubernetesProvisioner, "GP_KERNEL_GID", "-1", "kernel_gid", "GP_KERNEL_GID='-1' is below the minimum 0"),
        (KubernetesProvisioner, "GP_K8S_WATCH_TIMEOUT", "5m", "watch_timeout", "GP_K8S_WATCH_TIMEOUT='5m' is not a"),
        (KubernetesProvisioner, "GP_UNSCHEDULABLE_GRACE", "nan", "unschedulable_grace", "is not a finite number"),
        (KubernetesProvisioner, "GP_KERNEL_ROLE_RULES", "[{verbs: get}]", "kernel_role_rules",
         "GP_KERNEL_ROLE_RULES is not valid JSON"),
        (KubernetesProvisioner, "GP_KERNEL_ROLE_RULES", '{"verbs": ["get"]}', "kernel_role_rules",
         "GP_KERNEL_ROLE_RULES must be a JSON list, got dict"),
        (KubernetesProvisioner, "GP_KERNEL_ROLE_RULES", '[{"verbs": ["get"]}]', "kernel_role_rules",
         "is not a Role rule"),
        (KubernetesProvisioner, "GP_IMAGE_PULL_POLICY", "ifnotpresent", "image_pull_policy",
         "GP_IMAGE_PULL_POLICY='ifnotpresent' is not one of IfNotPresent, Always, Never"),
        (KubernetesProvisioner, "GP_PROHIBITED_UIDS", "0,root", "prohibited_uids",
         "GP_PROHIBITED_UIDS must be whole numbers, got '0,root'"),
        (DockerProvisioner, "GP_DOCKER_PULL_POLICY", "Always", "image_pull_policy",
         "GP_DOCKER_PULL_POLICY='Always' is not one of never, missing, always"),
        (YarnProvisioner, "GP_YARN_POLL_INTERVAL", "0", "poll_interval", "GP_YARN_POLL_INTERVAL='0' is below the"),
        (YarnProvisioner, "GP_YARN_SHUTDOWN_WAIT_TIME", "soon", "shutdown_wait_time", "is not a number"),
    ],
)  # fmt: skip
def test_bad_environment_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, cls: type, variable: str, value: str, trait: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(TraitError) as raised:
        getattr(make(cls), trait)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_good_environment_values_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GP_KERNEL_UID", "1001")
    monkeypatch.setenv("GP_K8S_WATCH_TIMEOUT", "60")
    monkeypatch.setenv("GP_KERNEL_ROLE_RULES", '[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]')
    monkeypatch.setenv("GP_YARN_POLL_INTERVAL", "2.5")
    k8s = make(KubernetesProvisioner)
    assert (k8s.kernel_uid, k8s.watch_timeout) == (1001, 60.0)  # type: ignore[attr-defined]
    assert k8s.kernel_role_rules == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]  # type: ignore[attr-defined]
    assert make(YarnProvisioner).poll_interval == 2.5  # type: ignore[attr-defined]


def test_role_rules_from_configuration_are_checked_too() -> None:
    with pytest.raises(TraitError, match=r"^kernel_role_rules: 'pods' is not a Role rule"):
        make(KubernetesProvisioner, kernel_role_rules=["pods"])


def test_unset_role_rules_give_the_defaults_and_empty_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GP_KERNEL_ROLE_RULES", raising=False)
    rules = make(KubernetesProvisioner).kernel_role_rules  # type: ignore[attr-defined]
    assert rules and all(rule["verbs"] and rule["resources"] for rule in rules)
    monkeypatch.setenv("GP_KERNEL_ROLE_RULES", "[]")
    assert make(KubernetesProvisioner).kernel_role_rules == []  # type: ignore[attr-defined]
