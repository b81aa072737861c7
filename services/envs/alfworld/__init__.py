"""ALFWorld on the real `alfworld` + `textworld` engine (DESIGN §3.1)."""

from services.envs.alfworld.env import AlfworldEnvironment

__all__ = ["AlfworldEnvironment"]
