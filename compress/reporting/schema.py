"""The version of report.json's schema: written by the report, checked by the gate, kept apart so
reading a report (`compress gate`) never imports what writing one needs (torch)."""

REPORT_SCHEMA_VERSION = 1
