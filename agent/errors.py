"""Errors of the agent, under the one posassist tree (protocol.errors.PosAssistError)."""

from __future__ import annotations

from protocol.errors import PosAssistError


class AgentError(PosAssistError):
    """Root of the agent's own errors."""

    public_reason = "agent error"


class ConfigError(AgentError):
    """The agent's data directory or arguments are unusable."""

    public_reason = "agent configuration error"


class RelayRefusedError(AgentError):
    """The relay refused this agent (unknown or revoked device, bad signature)."""

    close_code = 4001
    public_reason = "refused by relay"

    def __init__(self, code: str) -> None:
        super().__init__(f"relay refused this agent: {code}")
        self.code = code
