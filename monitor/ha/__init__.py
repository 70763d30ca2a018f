"""Active/standby daemons on one PostgreSQL store (issue 13): a lease row with an epoch.

Several ``monitor run`` processes may share one PostgreSQL store; exactly one is *active* (polls,
correlates, delivers), the others are *standby* and wait for the lease. Leadership is a lease row
(``ha_lease``) rather than an advisory lock on a dedicated connection: its expiry is a timestamp both
sides reason about (the leader stands down before it, a standby takes over only after it, both in the
database's clock) and its epoch fences every write of a deposed leader in SQL, whereas a session lock
dies only when the server notices the dead connection and carries no epoch to fence with.

- :mod:`monitor.ha.lease`: the decisions (renew, stand down, retry) as pure functions of a clock;
- :mod:`monitor.ha.store`: the lease row's SQL (acquire, renew, release, read);
- :mod:`monitor.ha.keeper`: the threads that keep the lease and stand the process down.

With the embedded SQLite store there is no lease: the daemon is always active.
"""
