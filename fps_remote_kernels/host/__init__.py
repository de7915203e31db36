"""Every change the front makes to another library's behaviour, and every workaround of a
library's bug, in its own process.

Each applies only to the code it was written for (`code_check`): where that code changed or
cannot be read (a `.pyc`-only install), the front starts without it and says so. What each
fixes, its versions, its measured effect and when to remove it: its module's docstring and
docs/operators/front-process.md; drafted upstream reports: docs/dev/upstream.md.
"""
