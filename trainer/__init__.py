"""The SDAR trainer: rollout over HTTP, a Redis buffer, GRPO with gated self-distillation."""
