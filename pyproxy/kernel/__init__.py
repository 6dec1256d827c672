"""The process kernel every role stands on: the event loop, the messages and channels between
processes (ipc), logging, process identity and privileges, and the shared memory segment.

The roles (``runtime``: master, TCP supervisor, workers; ``mi``: the management process) import
it; it imports none of them.
"""
