"""gateway-provisioners: start Jupyter kernels elsewhere (pods, containers, YARN, SSH hosts) through jupyter_client."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gateway_provisioners")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
