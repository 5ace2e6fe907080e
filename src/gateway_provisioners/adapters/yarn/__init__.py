"""Hadoop YARN: kernels as YARN applications (REST submission or spark-submit), one shared RM poller."""

from .backend import YarnBackend, YarnShared, kill_application
from .client import ResourceManagerClient
from .observe import LIBRARY_TAG
from .poller import ApplicationPoller

__all__ = ["LIBRARY_TAG", "ApplicationPoller", "ResourceManagerClient", "YarnBackend", "YarnShared", "kill_application"]
