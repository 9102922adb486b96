"""cnilab's scenario suites: what a CNI plugin developer checks, on any lab and any plugin.

Run them with `pytest scenarios/ --lab-config lab.toml` here, or installed with
`pytest --pyargs cnilab_scenarios --lab-config lab.toml` from any repository.
"""
