"""Frozen analysis results and their renderings (tables, CSV, JSON, markdown)."""

from weightspectra.report.results import LayerResult, Report, Status

__all__ = ["LayerResult", "Report", "Status"]
