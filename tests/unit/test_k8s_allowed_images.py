"""A client's KERNEL_IMAGE on Kubernetes is closed by default, as on Docker: only the kernel spec's image and the
operator's allowed_images run."""

from __future__ import annotations

import pytest

from gateway_provisioners.adapters.kubernetes import PodSettings, pod_request
from gateway_provisioners.core.errors import NotAuthorized
from gateway_provisioners.core.launch import LaunchSpec
from gateway_provisioners.provisioners.kubernetes import KubernetesProvisioner

SPEC_IMAGE = "registry.example/kernel-py:1"


def _spec(**values: str) -> LaunchSpec:
    return LaunchSpec("0c6e3a52-aaaa-bbbb-cccc-ddddeeeeffff", ["python3"], values=dict(values))


def test_the_default_setting_refuses_any_client_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GP_ALLOWED_IMAGES", raising=False)
    settings = KubernetesProvisioner(image_name=SPEC_IMAGE).pod_settings()
    assert settings.allowed_images == ()
    with pytest.raises(NotAuthorized, match=r"KERNEL_IMAGE='attacker/miner:latest' is not allowed here") as err:
        pod_request(_spec(KERNEL_IMAGE="attacker/miner:latest"), settings)
    assert "allowed_images (GP_ALLOWED_IMAGES)" in str(err.value) and "\n" not in str(err.value)


def test_the_spec_image_is_always_allowed() -> None:
    settings = PodSettings(image=SPEC_IMAGE)
    assert pod_request(_spec(), settings).image == SPEC_IMAGE
    assert pod_request(_spec(KERNEL_IMAGE=SPEC_IMAGE), settings).image == SPEC_IMAGE


def test_listed_images_are_allowed_and_others_still_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GP_ALLOWED_IMAGES", "registry.example/kernel-r:1, registry.example/kernel-scala:1")
    settings = KubernetesProvisioner(image_name=SPEC_IMAGE).pod_settings()
    assert (
        pod_request(_spec(KERNEL_IMAGE="registry.example/kernel-r:1"), settings).image == "registry.example/kernel-r:1"
    )
    with pytest.raises(NotAuthorized, match="is not allowed here"):
        pod_request(_spec(KERNEL_IMAGE="registry.example/kernel-r:2"), settings)
