"""The labels that several services share (DESIGN §3): the keys of skill retrieval, the episode
`info` and the rollout record. Named once here, so that the trainer and the teacher never import
an env server for them."""

from __future__ import annotations

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
"""ALFWorld's six task types, by the reference's names (`task_type`)."""

DATA_SOURCES = ("nq", "triviaqa", "popqa", "hotpotqa", "2wiki", "musique", "bamboogle")
"""Search-QA's data sources, in Search-R1's order (`data_source`)."""

CATEGORIES = ("beauty", "electronics", "fashion", "food", "garden")
"""WebShop's product categories (`category`)."""

LABEL_KEYS = ("task_type", "data_source", "category")
"""The keys under which an env names a task's label (in a task, an episode's `info`, the rollout
record, the teacher's skill-routing metadata); each env has one of them."""
