"""Side-by-side benchmarks: direct remote, the plugin's front, and Nginx in front of the remote.

Run with `bash benchmarks/run.sh` (or `.venv/bin/python -m benchmarks.bench --help`).
"""
