"""Opening an existing lab: config + provider + nodes + the scenario cluster driver.

STUB — owned by the lab-core work. Contract used by the pytest plugin and the CLI:

    lab = open_lab(Path("lab.toml"), name=None)   # name overrides config's lab name
    lab.config      -> lab.config.LabConfig
    lab.provider    -> lab.api.Provider
    lab.nodes()     -> list[lab.api.Node]
    lab.cluster()   -> lab.api.Cluster   (netns pods on nodes, or Kubernetes when k3s is on)
    lab.close()
"""
