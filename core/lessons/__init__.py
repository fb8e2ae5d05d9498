"""Guided lessons: short sequences of lab calls with fixed settings, a sentence to say and what to notice."""
