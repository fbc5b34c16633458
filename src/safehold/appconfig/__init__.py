"""Readers for applications' own configuration files that never run the application's code."""
