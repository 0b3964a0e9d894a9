"""The HTTP face of the service: routes decode, call the orchestrator, encode."""
