"""Choosing the dropout rate, tau and the epoch count of a regression network on validation data."""
