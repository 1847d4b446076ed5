"""Report builders: read a run's stored results (never re-run anything) and write pages."""
