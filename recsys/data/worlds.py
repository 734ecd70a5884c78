"""A family of simulated worlds: named settings of the simulators' generative model (``WORLD_KNOBS`` of
``recsys.data.simulate``), so that a claim about models can be checked on worlds other than the one it was
made on. Each world changes the default world in one respect, except ``other_generator``, which changes it in
all at once; ``mixture``, ``interaction``, ``other_features`` and ``other_generator`` change the form of the
model (how taste is shared, what it acts on, how features are made), not only a value.

The same world can be drawn as ratings (``recsys.data.simulate``, PAMELA's layout) or as pairwise choices
(``recsys.data.simulate_pairs``, Pick-a-Pic's layout). ``benchmarks/worlds.py`` runs the leaderboard on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from recsys.data.simulate import WORLD_KNOBS, SimulationConfig, simulate
from recsys.errors import UserError

KINDS = ("ratings", "choices")


@dataclass(frozen=True)
class World:
    """A named world: ``settings`` (world knob -> value) and a one-line ``description`` of what differs from
    the default world."""

    name: str
    description: str
    settings: dict = field(default_factory=dict)

    def flags(self) -> str:
        """The ``recsys data simulate`` options that draw this world (empty for the default world)."""
        return " ".join(f"--{name.replace('_', '-')} {value}" for name, value in self.settings.items())


WORLDS: dict[str, World] = {
    w.name: w
    for w in (
        World(
            "default",
            "the default world: 6 taste groups with independent tastes (rank 6), 16% individual taste, "
            "membership pulled by demographics, linear taste, tanh features",
        ),
        World("low_rank", "the 6 groups' tastes span only 2 directions", {"taste_rank": 2}),
        World(
            "many_groups",
            "24 taste groups whose tastes span 16 directions (more than profile's 6 or two_tower's 8)",
            {"taste_groups": 24, "taste_rank": 16},
        ),
        World("individual", "60% of taste variance is each user's own", {"individual_share": 0.6}),
        World(
            "no_demographics",
            "group membership independent of age, gender and nationality",
            {"demographic_weight": 0.0},
        ),
        World("noisy", "rating (and perception) noise 1.5 times the default's", {"noise_scale": 1.5}),
        World(
            "mixture",
            "each user's shared taste a softmax mixture of the 6 groups, not one group",
            {"membership": "mixture"},
        ),
        World(
            "interaction",
            "taste also weights 12 products of pairs of content attributes (not linear in content)",
            {"taste_form": "interaction"},
        ),
        World(
            "other_features",
            "features from a 3-layer ReLU net that does not see 4 of the 12 content attributes",
            {"feature_map": "relu", "hidden_attributes": 4},
        ),
        World(
            "other_generator",
            "all at once: 12 groups of rank 8 mixed per user, 35% individual taste, half the demographic pull, "
            "interaction taste, random cosine features blind to 2 attributes, noise 1.2",
            {
                "taste_groups": 12,
                "taste_rank": 8,
                "membership": "mixture",
                "individual_share": 0.35,
                "demographic_weight": 0.5,
                "taste_form": "interaction",
                "feature_map": "fourier",
                "hidden_attributes": 2,
                "noise_scale": 1.2,
            },
        ),
    )
}
assert all(set(w.settings) <= set(WORLD_KNOBS) for w in WORLDS.values())


def get_worlds(names: list[str] | None = None) -> list[World]:
    """The worlds named (all of them for None), in the order given; an unknown name is a one-line error."""
    if names is None:
        return list(WORLDS.values())
    unknown = [n for n in names if n not in WORLDS]
    if unknown:
        raise UserError(f"unknown world(s) {', '.join(unknown)}; known: {', '.join(WORLDS)}")
    return [WORLDS[n] for n in names]


def simulate_world(
    world: World,
    kind: str,
    out: str | Path,
    *,
    seed: int = 0,
    sizes: dict | None = None,
    progress: bool = False,
) -> Path:
    """Draw ``world`` as ``kind`` data (``ratings``: simulated PAMELA without PNGs; ``choices``: simulated
    Pick-a-Pic with flat JPEGs) into ``out``; ``sizes`` are further settings of that simulator's config
    (``users``, ``images``, ``prompts_per_user``, ...)."""
    if kind == "ratings":
        config = SimulationConfig(seed=seed, render_images=False, **(sizes or {}), **world.settings)
        return simulate(out, config, progress=progress)
    if kind == "choices":
        from recsys.data.simulate_pairs import PickapicSimulationConfig, simulate_pickapic

        config = PickapicSimulationConfig(seed=seed, detailed_images=False, **(sizes or {}), **world.settings)
        return simulate_pickapic(out, config, progress=progress)
    raise UserError(f"unknown kind of data {kind!r}; choose {' or '.join(KINDS)}")
