"""How the plugin reaches a node and stays fast there: the one-file build (with pyroute2
vendored), its shell prologue, the FIFO hand-off to the resident helper, the in-process
path. Calls plugin.cni.skel.dispatch; nothing below imports this package.
"""
