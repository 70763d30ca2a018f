"""Remote pollers (issue 14): what a poller in a municipality sends the core, and how the core checks it.

Pure code only so far: the wire format (:mod:`.messages`) and the per-poller sequence bookkeeping
that drops repeats and notices gaps (:mod:`.sequence`). The MQTT transport and the poller role
build on these.
"""
