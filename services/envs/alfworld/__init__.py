"""ALFWorld (DESIGN §3.1): the native engine, or the real `alfworld` + `textworld` one."""

from services.envs.alfworld.env import AlfworldEnvironment

__all__ = ["AlfworldEnvironment"]
