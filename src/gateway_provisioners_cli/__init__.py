"""Command-line tools of gateway-provisioners (click)."""
