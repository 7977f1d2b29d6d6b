"""Local development tooling, not deployed (.funcignore): Azurite runner, the local Functions host,
``make run``, the SMTP sink and child-process helpers."""
