"""WebShop: the original site, goals and reward over a generated or the real catalog."""

from services.envs.webshop.env import WebshopEnvironment

__all__ = ["WebshopEnvironment"]
