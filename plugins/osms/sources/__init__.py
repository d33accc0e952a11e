"""The source systems: one HTTP client (retry policy as data), connections, and the extract."""
