"""Correlation: turn a stream of confirmed target states into the incidents people need to hear about.

``engine`` is a pure, deterministic core over StateChange events and injected time; ``service`` is
the I/O shell the daemon calls (persistence, restart, CLI requests); ``replay`` drives the same core
from recorded probe outcomes.
"""
