"""Providers make nodes: netns (default), libvirt, existing (SSH), vagrant."""
