"""The bed's Kubernetes API server internals; the public entry is lbctl.lab.apiserver."""
