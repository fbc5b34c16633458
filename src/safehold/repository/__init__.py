"""Storage: the restic wrapper and the recovery-point manifest."""
