"""What a container runtime does on a node: libcni's calls and cache (cni_runtime) and the
network config each node's runtime hands the plugin (network)."""
