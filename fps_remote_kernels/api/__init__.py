"""The kernels, kernelspecs and sessions API the front serves.

- `routes`: the Jupyverse `Kernels` router; each route checks, delegates, maps errors.
- `checks`: what a request must be before any remote is contacted.
- `service`: kernels and sessions over one or several remotes (merge, routing).
- `placement`: which pool member gets a new kernel.
- `store`: what the front remembers across restarts (SQLite).
- `culling`: idle kernels shut down with jupyter_server's rules.

Depends on `relay`, `execution`, `remote` and the top-level modules.
"""
