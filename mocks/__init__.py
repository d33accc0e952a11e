"""The simulated outside world: source systems and the State Corporation's receiver."""
