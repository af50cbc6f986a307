"""Serving: the HTTP event collector."""
