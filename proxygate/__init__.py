"""proxygate: one local endpoint in front of many LLM accounts."""

__version__ = "0.1.0"
