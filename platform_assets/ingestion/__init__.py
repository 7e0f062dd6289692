"""Extraction: how each kind of source (files, database, REST) is read into the landing zone, and which
state the next extraction resumes from."""
