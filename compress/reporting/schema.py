"""The version of report.json's schema: written by the report, checked by the gate, kept apart so
reading a report (`compress gate`) never imports what writing one needs (torch)."""

# 2: the summary is keyed on what steps produced (onnx, parity, latency) and holds the final
# ONNX's quality; the latency figures sit under summary.latency.
REPORT_SCHEMA_VERSION = 2
