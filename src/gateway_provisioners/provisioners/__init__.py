"""jupyter_client kernel provisioners (entry-point group ``jupyter_client.kernel_provisioners``)."""
