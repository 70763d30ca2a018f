"""Availability reports (``monitor report``): pure figures over the event log, then renderers."""
