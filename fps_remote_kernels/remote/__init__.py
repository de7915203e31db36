"""The remote kernel servers: what the front knows of each and how it talks to it.

- `kinds`: every difference between Jupyverse, jupyter_server, Kernel Gateway and Enterprise
  Gateway, in one table.
- `credentials`: the front's credentials for a remote, kept out of logs.
- `rest_client`: one HTTP client per remote (retries, login, kind detection, the kernel
  WebSocket handshake).
- `kernels`: the remote's kernels, kernelspecs and sessions with jupyter_server's contract.
- `kernel_socket`: the front's own RFC 6455 client for the upstream kernel WebSocket;
  `proxy`: the environment's forward proxy for it (HTTP CONNECT).
- `cache`, `working_dirs`: short-lived shared answers; where a kernel starts.

Depends on `config` and `errors` only.
"""
