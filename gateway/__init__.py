"""Menshen (门神): a secure OpenAI-compatible gateway in front of a self-hosted LLM."""

__version__ = "0.1.0"

__all__ = ["__version__"]
