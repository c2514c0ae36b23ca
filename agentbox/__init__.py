"""agentbox: the daemon of a small box that runs AI agents around the clock."""

__version__ = "0.1.0"
