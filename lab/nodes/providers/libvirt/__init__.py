"""The libvirt provider: KVM/TCG virtual machines from a cached base image."""
