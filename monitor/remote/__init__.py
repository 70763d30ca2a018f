"""Remote pollers (issue 14): a poller per municipality polls its zone and the core correlates it all.

The wire format and its validation (:mod:`.messages`), the per-poller numbering that drops repeats
and notices gaps (:mod:`.sequence`), the poller's on-disk spool (:mod:`.spool`), the MQTT link on
both sides (:mod:`.link`), the poller role ``monitor poll`` (:mod:`.poller`) and the core's intake
that stores and correlates what pollers send (:mod:`.core`).
"""
