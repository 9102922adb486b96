"""`lab` subcommands, one module each: `add_parser(subparsers)` and `run(args) -> int`.

Modules keep heavy imports (libvirt, paramiko, kubernetes) inside functions so `lab --help`
stays fast. Append a module name here to add a subcommand.
"""
COMMANDS = [
    "up", "down", "status", "exec", "logs",   # lab core
    "image",                                   # libvirt images
    "ssh",                                     # SSH nodes
    "deploy", "kubeconfig",                    # K3s / Multus
]
