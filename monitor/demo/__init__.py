"""``monitor demo``: the real daemon pipeline on a scripted network, with local sinks only.

Nothing is probed and no server is needed: a :class:`~monitor.demo.scenario.ScriptedProbe` answers
the daemon's polls from ``scenario.yaml``; mail goes into a Maildir folder, tickets into a folder,
incident events to the console. Everything else (scheduler, state machine, event store,
correlation, outbox and workers, /metrics) is the code that runs in production.
"""
