"""Runstream server."""
