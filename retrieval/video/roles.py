"""Which windows of a trajectory become images, with which role (the benchmark protocol).

As for the simulator's data sets (`retrieval.sim.layout`): the first third of a test
instance's trajectories are query trajectories, giving the first window that reaches each
blur level 1..6; the others are database trajectories, giving one window each at a
round-robin target level; train and val trajectories give every window.
"""

from __future__ import annotations

from retrieval.sim.layout import (
    query_trajectory_count,
    select_database_exposure,
    select_query_exposures,
)


def chosen_exposures(split: str, trajectory: int, trajectories: int, levels: list[int]
                     ) -> tuple[str, list[int]]:
    """(role, exposures) of trajectory number `trajectory` of an instance with `trajectories`.

    Exposure e is the window of e + 1 frames; `levels` holds the level of each exposure.
    """
    if split != "test":
        return split, list(range(len(levels)))
    if trajectory < query_trajectory_count(trajectories):
        return "query", sorted(select_query_exposures(levels).values())
    return "database", [select_database_exposure(levels, trajectory)]
