"""Benchmarks: scripts run as ``python benchmarks/NAME.py`` that print ratios measured side by side in one run. A
package so that their tests import them (``from benchmarks import verify_code``) instead of loading files by path."""
