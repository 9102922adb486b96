"""`lab` subcommands, one module each: `add_parser(subparsers)` and `run(args) -> int`.

Modules keep heavy imports (libvirt, paramiko, kubernetes) inside functions so `lab --help`
stays fast. Append a module name here to add a subcommand.
"""
SUBCOMMANDS = [
    "up", "down", "status", "exec", "logs", "ls",   # lab core
    "pod", "cni",                              # pods and CNI calls by hand
    "image",                                   # libvirt images
    "ssh",                                     # SSH nodes
    "deploy", "kubeconfig",                    # K3s / Multus
    "completion",                              # shell completion
]
