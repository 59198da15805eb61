"""What to generate: size, seed, and the two knobs (covariate shift, subgroup recording bias)."""

from __future__ import annotations

from dataclasses import dataclass, field

from clinical_mlops.ingestion import diabetes130 as d130

__all__ = ["PopulationShift", "SubgroupBias", "SyntheticConfig"]


@dataclass(frozen=True)
class PopulationShift:
    """Covariate shift (knob a): 0 = the calibrated population, 1 = strongly shifted.

    Moves age toward older bands, raises prior inpatient/emergency use and medication counts,
    changes the race mix and raises the HbA1c testing rate; P(readmitted | columns) is kept.
    """

    strength: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.strength) <= 1.0:
            raise ValueError(f"PopulationShift.strength must be in [0, 1], got {self.strength}")


@dataclass(frozen=True)
class SubgroupBias:
    """Subgroup-specific recording bias (knob b), applied only to rows where ``attribute == group``.

    ``label_flip_rate``: each ``<30`` outcome in the group is recorded as ``NO`` with this
    probability (under-recorded readmissions). ``measurement_missing_rate``: each measured
    ``A1Cresult`` / ``max_glu_serum`` in the group is recorded as ``None`` with this probability.
    ``utilisation_undercount_rate``: with this probability an encounter in the group has its
    prior visits (inpatient, emergency, outpatient) recorded as 0 — care received elsewhere,
    invisible to this hospital. ``history_unlinked_rate``: with this probability an encounter in
    the group is not linked to the patient's record (a record-linkage failure: it gets a patient
    number of its own), so the patient's earlier encounters at this hospital are invisible too.
    Both leave the outcome unchanged, so a model that relies on prior visits under-detects
    readmissions in the group: a real recall gap. ``documentation_undercount_rate``: with this
    probability an encounter in the group has its laboratory procedures and medications recorded at
    half their count (an interface outage on the wards that treat the group): a model that relies on
    them (length of stay) under-detects prolonged stays in the group.
    """

    attribute: str = "race"
    group: str = "AfricanAmerican"
    label_flip_rate: float = 0.0
    measurement_missing_rate: float = 0.0
    utilisation_undercount_rate: float = 0.0
    history_unlinked_rate: float = 0.0
    documentation_undercount_rate: float = 0.0

    def __post_init__(self) -> None:
        allowed = {"race": (*d130.RACES, d130.MISSING), "gender": d130.GENDERS, "age": d130.AGE_BANDS}
        if self.attribute not in allowed:
            raise ValueError(
                f"SubgroupBias.attribute must be one of {sorted(allowed)}, got {self.attribute!r}"
            )
        if self.group not in allowed[self.attribute]:
            raise ValueError(f"{self.group!r} is not a value of {self.attribute!r}")
        for name in ("label_flip_rate", "measurement_missing_rate", "utilisation_undercount_rate",
                     "history_unlinked_rate", "documentation_undercount_rate"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"SubgroupBias.{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate: size, seed, covariate shift, optional subgroup bias, first encounter_id."""

    n_encounters: int = 20_000
    seed: int = 42
    shift: PopulationShift = field(default_factory=PopulationShift)
    bias: SubgroupBias | None = None
    first_encounter_id: int = 12_522

    def __post_init__(self) -> None:
        if int(self.n_encounters) < 0:
            raise ValueError(f"n_encounters must be >= 0, got {self.n_encounters}")
        if int(self.first_encounter_id) < 1:
            raise ValueError(f"first_encounter_id must be >= 1, got {self.first_encounter_id}")
