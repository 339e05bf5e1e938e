"""The relay's request handlers: agents, consoles, the HTTP API and operations endpoints."""
