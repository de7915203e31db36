"""Local kernels next to remote ones: a supervised kernels-only Jupyverse child of the front.

- `kernel_host`: starting, supervising and ending the child (and the child's entry point).
- `processes`: free ports, a kernels-only Jupyverse's plugins, what a process leaves behind.
"""
