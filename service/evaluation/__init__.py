"""Offline evaluation of a served model: held-out scoring, reports, figures."""
