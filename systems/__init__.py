"""Adapters that wrap each system, and the model implementations (TTS systems, LMs with sparse attention)."""
