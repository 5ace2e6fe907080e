"""``custom-resource-provisioner`` and ``spark-operator-provisioner``: kernels whose pod an operator makes.

The kernel spec names a custom resource (group, version, plural, kind) and a template of it; the provisioner creates
the resource and the operator makes the kernel's pod, which the Kubernetes adapter then follows like its own
(:mod:`~gateway_provisioners.adapters.kubernetes.custom_resource`). Everything else — the pod settings, images, user
ids, service accounts, the handshake — is the Kubernetes provisioner's. ``spark-operator-provisioner`` is that with the
kubeflow Spark operator's ``SparkApplication`` and a shipped template: the kernel's pod is the Spark driver, made by
the operator's ``spark-submit`` in cluster mode, and its executors are pods of the application (docs/spark-operator.md).
"""

from __future__ import annotations

from typing import Any

from ..adapters.kubernetes import shared_hub
from ..adapters.kubernetes.custom_resource import CustomResourceBackend, ResourceKind, ResourceSettings
from ..adapters.kubernetes.pod_template import load_template
from ..core.backend import Backend
from ..core.errors import ConfigurationError
from ..core.launch import ConnectionMode
from .kubernetes import KubernetesProvisioner
from .settings import Integer, Mapping, NameList, Text, setting

SPARK_APPLICATION_TEMPLATE = "spark-application.yaml.j2"


class CustomResourceProvisioner(KubernetesProvisioner):
    """Run the kernel in the pod that an operator makes of a custom resource."""

    resource_group = setting(Text, "GP_CRD_GROUP", default="", help="API group of the kernel's custom resource.")
    resource_version = setting(Text, "GP_CRD_VERSION", default="", help="API version of the kernel's custom resource.")
    resource_plural = setting(Text, "GP_CRD_PLURAL", default="", help="Plural name (URL path) of the custom resource.")
    resource_kind = setting(Text, "GP_CRD_KIND", default="", help="Kind of the custom resource.")
    resource_template = setting(
        Text, "GP_CRD_TEMPLATE", default="",
        help="Path of the Jinja2 template of the resource (every {{ }} renders as one JSON value); it must make a pod "
        "named {{ pod_name }} with {{ labels }} that runs the agent (docs/spark-operator.md lists the variables).",
    )  # fmt: skip
    resource_state_field = setting(
        Text, default="", help="Dotted path of the resource's state in its status, read while the launch waits for "
        "the pod (e.g. status.applicationState.state); empty: the pod alone tells.",
    )  # fmt: skip
    resource_message_field = setting(Text, default="", help="Dotted path of the operator's message about that state.")
    resource_failed_states = setting(
        NameList, default=[], help="States (any case) of resource_state_field in which the launch has failed."
    )

    def resource_settings(self) -> ResourceSettings:
        """The resource of this kernel spec, checked: every part of its kind and a template are needed."""
        parts = {"resource_group": self.resource_group, "resource_version": self.resource_version,
                 "resource_plural": self.resource_plural, "resource_kind": self.resource_kind,
                 "resource_template": self.resource_template}  # fmt: skip
        missing = [name for name, value in parts.items() if not value]
        if missing:
            raise ConfigurationError(
                f"{type(self).__name__} needs {', '.join(missing)} in the kernel spec's provisioner config"
            )
        kind = ResourceKind(self.resource_group, self.resource_version, self.resource_plural, self.resource_kind)
        return ResourceSettings(
            kind=kind, template=load_template(self.resource_template, "resource"),
            state_field=self.resource_state_field, message_field=self.resource_message_field,
            failed_states=tuple(self.resource_failed_states), context=self.template_context(),
        )  # fmt: skip

    def backend_modes(self) -> tuple[ConnectionMode, ...]:
        return CustomResourceBackend.modes

    def template_context(self) -> dict[str, Any]:
        """Variables of this provisioner's own for the resource template (besides the pod's)."""
        return {}

    def make_backend(self) -> Backend:
        return CustomResourceBackend(
            shared_hub(self.kubeconfig, self.kube_context, self.watch_timeout), self.pod_settings(),
            self.resource_settings(),
        )  # fmt: skip


class SparkOperatorProvisioner(CustomResourceProvisioner):
    """Run the kernel as the driver of a kubeflow Spark operator ``SparkApplication``."""

    resource_group = setting(Text, default="sparkoperator.k8s.io", help="API group of SparkApplication.")
    resource_version = setting(Text, default="v1beta2", help="API version of SparkApplication.")
    resource_plural = setting(Text, default="sparkapplications", help="Plural of SparkApplication.")
    resource_kind = setting(Text, default="SparkApplication", help="Kind of the resource.")
    resource_template = setting(
        Text, "GP_SPARK_APPLICATION_TEMPLATE", default=SPARK_APPLICATION_TEMPLATE, default_doc="the shipped template",
        help="Path of a Jinja2 SparkApplication template replacing the shipped one.",
    )  # fmt: skip
    resource_state_field = setting(Text, default="status.applicationState.state", help="The application's state.")
    resource_message_field = setting(
        Text, default="status.applicationState.errorMessage", help="The operator's message about the state."
    )
    resource_failed_states = setting(
        NameList, default=["FAILED", "SUBMISSION_FAILED", "FAILING"],
        help="Application states in which the launch has failed.",
    )  # fmt: skip
    spark_version = setting(
        Text, "GP_SPARK_VERSION", default="4.0.0",
        help="Spark version of the images (the application's sparkVersion; 3.0 or later, for the pod templates).",
    )  # fmt: skip
    executor_image_name = setting(
        Text, "GP_EXECUTOR_IMAGE_NAME", default=lambda p: p.image_name, default_doc="image_name",
        help="Image of the executors (jupyter-spark-images build makes one).",
    )  # fmt: skip
    executor_instances = setting(
        Integer, "GP_SPARK_EXECUTOR_INSTANCES", default=1, minimum=0, maximum=10000, help="Executors of each kernel."
    )
    spark_conf = setting(
        Mapping, default={}, help="Spark properties of every kernel's application (its sparkConf), e.g. "
        '{"spark.executor.memory": "1g"}.',
    )  # fmt: skip

    def template_context(self) -> dict[str, Any]:
        conf = {str(k): str(v) for k, v in dict(self.spark_conf).items()}
        return {"spark_version": self.spark_version, "executor_image": self.executor_image_name,
                "executor_instances": self.executor_instances, "spark_conf": conf}  # fmt: skip
