"""Command-line entry points (the only place that reads absl flags)."""
