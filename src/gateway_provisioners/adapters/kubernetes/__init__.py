"""The Kubernetes adapter: kernels as pods (``kubernetes-provisioner``).

Modules: ``client`` (the API calls, async), ``watcher`` (one list-and-watch), ``hub`` (the per-process client and
watchers), ``status`` (pod status → observation), ``params`` (per-launch KERNEL_* values), ``pod_template`` (safe
rendering, secure defaults), ``request`` (the operator's pod settings and one launch's checked choices), ``backend``
(the backend port: builds and watches pods), ``reaper`` (orphan cleanup).

The SDK (``kubernetes_asyncio``) is imported only when a request is made, so this package imports without the ``k8s``
extra and a missing extra gives one line naming it.
"""

from .backend import KubernetesBackend
from .hub import KubeHub, close_hubs, shared_hub
from .request import PodRequest, PodSettings, pod_request

__all__ = ["KubeHub", "KubernetesBackend", "PodRequest", "PodSettings", "close_hubs", "pod_request", "shared_hub"]
