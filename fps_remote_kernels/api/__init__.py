"""The kernels, kernelspecs and sessions API the front serves.

- `routes`: the Jupyverse `Kernels` router; each route checks, delegates, maps errors.
- `checks`: what a request must be before any remote is contacted.
- `service`: the kernels API over one or several remotes, built from its parts:
  `remotes` (calls on every remote at once), `kernelspecs` (merged), `routing` (kernel ids to
  their remote, starts and pools), `sessions` (on the remote or kept by the front).
- `vanished`: kernels gone from their remote, answered as dead for a while.
- `placement`: which pool member gets a new kernel.
- `store`: what the front remembers across restarts (SQLite).
- `culling`: idle kernels shut down with jupyter_server's rules.

Depends on `relay`, `execution`, `remote` and the top-level modules.
"""
