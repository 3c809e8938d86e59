"""Serverless event relay: webhook publisher for Power Automate and Logic Apps."""

__version__ = "0.3.0"
