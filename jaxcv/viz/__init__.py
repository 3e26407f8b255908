"""Figures for run reports, written as PNG files (matplotlib, no display needed)."""
