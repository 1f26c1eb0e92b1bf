"""Metrics: model FLOPs utilisation, hardware peaks, memory and device sampling."""
