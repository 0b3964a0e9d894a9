"""Event-sourced orchestration of AI coding agents over Redis Streams."""
