"""The polling stage: targets in, confirmed state changes out.

Everything between the inventory and a confirmed :class:`~monitor.state.StateChange` lives here,
so the daemon (and a separate poller process) reuses it as one piece:

- ``stage``       :class:`~monitor.polling.stage.PollingStage`, the interface: open the event store and
                  restore states, start the probes, schedule, poll, confirm, store, hand each
                  confirmed change to its ``sinks``; stop, drain, close
- ``probeset``    which probes a process starts and closes, one target's poll, ICMP batches
- ``scheduler``   per-target slots at stable offsets, the concurrency bound, ICMP batches per tick
- ``assess``      pure: one poll's probe results + thresholds -> an observation
- ``table_watch`` subscriber tables (ONUs, stations) walked with their parent's poll
- ``snmp_news``   SNMP reachability changes, told once per poll pass
- ``keeper``      writes state changes to the event store; holds them while it refuses writes

The confirmed-state machine itself (:mod:`monitor.state`) is pure and shared with ``monitor replay``.
"""
