"""Real servers for tests: each started in its own temp dir, on loopback and a free port, PID kept."""
