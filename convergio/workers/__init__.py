"""Temporal workers that host Convergio's workflows and activities."""
