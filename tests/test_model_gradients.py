"""Whole-model float64 gradient checks (filled in as models arrive)."""
MODEL_GRADIENT_CHECKS = {}
