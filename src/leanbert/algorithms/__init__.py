"""Training algorithms that plug into the trainer: each one a small functional core on
tensors plus a thin adapter (Composer-style), with a method card in its module docstring.

- :mod:`leanbert.algorithms.token_dropping`: token dropping (Hou et al., ACL 2022).
"""
