"""The Kubernetes adapter: kernels as pods (``kubernetes-provisioner``).

Modules: ``client`` (the API calls, async), ``watcher`` (one list-and-watch), ``hub`` (the per-process client and
watchers), ``status`` (pod status → observation), ``params`` (per-launch KERNEL_* values), ``pod_template`` (safe
rendering, secure defaults), ``backend`` (the backend port), ``reaper`` (orphan cleanup).

The SDK (``kubernetes_asyncio``) is imported only when a request is made, so this package imports without the ``k8s``
extra and a missing extra gives one line naming it.
"""

from .backend import KubernetesBackend, PodSettings
from .hub import KubeHub, close_hubs, shared_hub

__all__ = ["KubeHub", "KubernetesBackend", "PodSettings", "close_hubs", "shared_hub"]
