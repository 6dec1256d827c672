"""The pre-fork server's roles: a master that binds and supervises (arbiter.py), a TCP
supervisor that accepts and passes connections (supervisor.py), workers that route (worker.py,
made of udp.py, streams.py, handoff.py and proxy.py).

They stand on the process kernel (``kernel``: loop, ipc, logs, shared memory); the SIP core and
the script engine below them never touch a socket, a process or a clock.
"""
