"""Agents: model clients, and (next) agent definitions loaded from data."""
