"""Pieces every role shares: errors, time, partitioning."""
