"""The podman provider: each lab node a privileged container on this host's kernel."""
