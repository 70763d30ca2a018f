"""The daemon's small authenticated HTTP API and the signed one-click ack links of technician alerts."""
