"""Presenting a study: terminal tables and explanations, figures."""
