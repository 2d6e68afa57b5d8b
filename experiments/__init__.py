"""Reproductions of the five seed texts with jaxmlp, and the MLP records; one module each.

Run one with ``python -m experiments.<name>`` (``--quick`` for a smoke run); results land in
``experiments/results/<name>.json`` and ``.png``.
"""
