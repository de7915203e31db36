"""Server-side execution: cells of the front's notebooks run on remote kernels without a
browser (`POST /api/kernels/{id}/execute`).

- `executor`: one executor socket per kernel, a queue of cells.
- `outputs`: kernel messages written into a cell as JupyterLab writes them.
- `documents`: the collaboration rooms a cell is read from and held open in.
"""
