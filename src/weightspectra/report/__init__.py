"""Frozen analysis results and their renderings (tables, CSV, JSON, markdown)."""

from weightspectra.enums import Status
from weightspectra.report.results import LayerResult, Report

__all__ = ["LayerResult", "Report", "Status"]
