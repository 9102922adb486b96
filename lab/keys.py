"""SSH key material the harness owns. STUB — owned by the SSH work. Contract:

    client_keypair(state_dir: Path) -> tuple[Path, str]
        the lab's client key (created 0600 if missing) and its public line "ssh-ed25519 AAAA… cnilab"
    host_keys(state_dir: Path, node: str) -> HostKeys
        per-node SSH host key pair generated on the harness side (created once, reused), so the
        libvirt seed can inject it and known_hosts pins it; HostKeys has .private_pem (str),
        .public_line (str, "ssh-ed25519 AAAA…"), .key_type (str)
    known_hosts_line(address: str, keys: HostKeys) -> str
"""
