"""neuromorphic: integer AM-SU networks (placeholder init, filled below)."""
