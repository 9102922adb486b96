"""Scenario drivers: the Cluster the suites use, as pod namespaces (podns) or through
Kubernetes (kube_cluster), and the pytest plugin that hands it to them."""
