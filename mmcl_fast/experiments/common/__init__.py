"""Shared pieces of the experiments: probes and metrics, lr schedules, config -> CLI flags."""
