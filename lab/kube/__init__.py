"""K3s and Multus on lab nodes: pure command/manifest builders plus the actions that run them."""
