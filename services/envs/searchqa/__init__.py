"""Search-QA in the Search-R1 / verl-agent protocol (in progress: reward and turn protocol so far)."""
