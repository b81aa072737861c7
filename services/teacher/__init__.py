"""The teacher service: skill retrieval and privileged scoring (DESIGN §5)."""
