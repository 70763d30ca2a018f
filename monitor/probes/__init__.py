"""Probes: one module per kind (icmp, snmp), one shared signature (:class:`monitor.probes.base.Probe`)."""
