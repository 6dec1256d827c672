"""The pre-fork server: a master that binds and supervises, workers that route, a TCP supervisor.

Everything that touches sockets, processes or clocks lives here; the SIP core and the script
engine below it never do.
"""
