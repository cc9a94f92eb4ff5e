"""Offline evaluation: pure ranking metrics, a temporal hold-out and the session next-item protocol."""
