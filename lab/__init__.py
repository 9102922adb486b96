"""cnilab's lab harness: providers make nodes, actions make them a cluster, scenarios judge it."""
