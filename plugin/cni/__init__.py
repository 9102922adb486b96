"""The CNI plugin itself: dispatcher (skel), config (netconf), one function per command
(commands), results, errors, IPAM delegation, the veth wiring and ADD's undo stack.

Imports plugin.crossnode (the way to other nodes) when a backend is set; knows nothing of
how it is delivered (plugin.delivery calls skel.dispatch).
"""
