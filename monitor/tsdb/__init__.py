"""Time series: points, line protocol, the schema, and a writer that never blocks polling."""

from monitor.tsdb.lineprotocol import to_line_protocol
from monitor.tsdb.point import Point, make_point
from monitor.tsdb.schema import STATE_CODES, icmp_points, snmp_points, state_point
from monitor.tsdb.writer import TimeseriesWriter, make_writer

__all__ = [
    "STATE_CODES",
    "Point",
    "TimeseriesWriter",
    "icmp_points",
    "make_point",
    "make_writer",
    "snmp_points",
    "state_point",
    "to_line_protocol",
]
