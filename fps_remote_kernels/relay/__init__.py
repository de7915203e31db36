"""The kernel WebSocket relay: a client's socket bridged to the remote's.

- `bridge`: the upstream handshake, then two pumps; frames pass untouched.
- `frames`: cheap checks of client frames, legacy <-> v1 translation.
- `replay`: what a kernel sent while its client blipped, replayed on reconnect.

The bridge offers the frames it moves to observers (`observers.py`) instead of growing
branches of its own. Depends on `remote`, `observers` and `errors`.
"""
