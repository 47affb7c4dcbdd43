"""Artifacts: content-addressed blobs (``blobs.py``) for the files of versioned artifacts.

Blob bytes never travel through the event log: clients upload them to a blob store, and
only the manifest (paths, digests, sizes) travels as an ``ArtifactLogged`` event.
"""
