"""The extracts a demo lands: synthetic ones generated here, the UCI release cut into ordered extracts, or
another source's file as it is with the external-site extracts its contract declares beside it."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SYNTHETIC_SOURCE", "DemoExtracts", "choose_source", "prepare_extracts"]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class DemoExtracts:
    """The extracts the demo lands: the first ones train the models, the later ones arrive after release."""

    training: list[Path]
    later: list[Path]


SYNTHETIC_SOURCE = "synthetic_diabetes130"
"""The source the synthetic generator's extracts belong to (its own contract: never mixed with real rows)."""


def _header_of(path: Path) -> list[str]:
    """The header of a CSV, or of the encounter CSV inside the UCI zip."""
    import csv
    import io
    import zipfile

    from clinical_mlops.ingestion import landing

    if not zipfile.is_zipfile(path):
        return landing.read_header(path)
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.namelist() if m.endswith(".csv") and not m.endswith("IDs_mapping.csv")]
        if len(members) != 1:
            raise ValueError(f"{path.name}: the zip holds {len(members)} data CSV files; unpack the one to land")
        with archive.open(members[0]) as handle:
            first = io.TextIOWrapper(handle, encoding="utf-8-sig").readline()
    return next(csv.reader([first]))


def choose_source(checked, path: Path | None, name: str | None):
    """The source a demo runs on: synthetic by default; for a file, the named contract or the one whose header
    the file matches (the UCI zip or CSV picks ``diabetes130``). ValueError with one line otherwise."""
    from clinical_mlops.sources.matching import match_header

    if path is None:
        if name not in (None, SYNTHETIC_SOURCE):
            raise ValueError(f"--source-name {name} needs --source FILE (synthetic data is {SYNTHETIC_SOURCE})")
        return checked.sources[SYNTHETIC_SOURCE]
    if name is not None:
        if name not in checked.sources:
            raise ValueError(f"no source named {name!r} (sources: {', '.join(checked.sources)})")
        return checked.sources[name]
    member = "diabetic_data.csv" if path.suffix == ".zip" else path.name
    return match_header(_header_of(path), checked.sources, file_name=member)


def _beside(source, path: Path) -> list[Path]:
    """The source's other known extracts of another site, found beside ``path`` (same name, sha256 if declared)."""
    from clinical_mlops.ingestion import landing

    found = []
    for extract in source.contract.extracts:
        candidate = path.parent / extract.file
        if extract.role != "external_site" or candidate == path or not candidate.is_file():
            continue
        if extract.sha256 and landing.file_sha256(candidate) != extract.sha256:
            _say(f"note: {candidate.name} is not the declared {extract.file} (sha256 differs); not landed")
            continue
        found.append(candidate)
    return found


def prepare_extracts(
    path: Path | None, seed: int, n_encounters: int, n_extracts: int, landing_dir: Path, bias: float, shift: float,
    source=None,
) -> DemoExtracts:
    """Synthetic: ``n_encounters`` cut into ``n_extracts - 1`` training extracts, then three production windows
    of the same size: a clean one (no recording gap, no shift), one from a population shifted by ``shift``,
    and one with a recording gap for the biased group (:func:`_recording_gap`). The UCI release: ``n_extracts`` ordered extracts, the
    last arriving after release (no shift is injected into real data). Another source's file: landed as it
    is, and the contract's external-site extracts found beside it arrive after release.
    ``landing_dir`` is the source's own landing folder."""
    from clinical_mlops.ingestion import uci

    landing_dir.mkdir(parents=True, exist_ok=True)
    if path is not None and source is not None and source.name not in ("diabetes130", SYNTHETIC_SOURCE):
        target = landing_dir / path.name
        if not target.exists():
            shutil.copyfile(path, target)
        later = []
        for other in _beside(source, path):
            shutil.copyfile(other, landing_dir / other.name)
            later.append(landing_dir / other.name)
        return DemoExtracts([target], later)
    if path is not None:
        _say(f"Reading the UCI extract from {path} …")
        paths = uci.write_sequential_extracts(uci.load_uci_encounters(path), landing_dir, n_extracts,
                                              prefix=f"uci_of{n_extracts}")
        return DemoExtracts(paths[:-1], paths[-1:]) if len(paths) > 1 else DemoExtracts(paths, [])

    from clinical_mlops.ingestion import synthetic

    injected = synthetic.SubgroupBias("race", "AfricanAmerican", utilisation_undercount_rate=bias,
                                      history_unlinked_rate=bias) if bias else None
    _say(f"Generating {n_encounters:,} synthetic encounters (seed {seed}"
         + (f"; prior visits of AfricanAmerican patients under-recorded at rate {bias:g}" if bias else "") + ") …")
    encounters = synthetic.generate_encounters(
        synthetic.SyntheticConfig(n_encounters=n_encounters, seed=seed, bias=injected)
    )
    stem = f"synthetic_s{seed}_n{n_encounters}_of{n_extracts}" + (f"_bias{bias:g}" if bias else "")
    n_training = max(1, n_extracts - 1)
    training = uci.write_sequential_extracts(encounters, landing_dir, n_training, prefix=stem)
    if n_extracts < 2:
        return DemoExtracts(training, [])
    size = n_encounters // n_training
    windows = [("clean", 0.0, None), (f"shift{shift:g}", shift, injected),
               ("recording_gap", 0.0, _recording_gap(injected))]
    later: list[Path] = []
    first_id = int(encounters["encounter_id"].astype("int64").max()) + 1
    offset = int(encounters["patient_nbr"].astype("int64").max())
    for k, (label, window_shift, window_bias) in enumerate(windows, start=1):
        _say(f"Generating production window {k}: {size:,} encounters — " + {
            "clean": "the training population, recorded without the gap",
            "recording_gap": "prior visits and, for the same group, lab procedures and medications under-recorded "
                             "(an interface outage)"}.get(label, f"a population shifted by {shift:g} "
                                                                 "(the generator's covariate-shift knob)") + " …")
        frame = synthetic.generate_encounters(
            synthetic.SyntheticConfig(n_encounters=size, seed=seed + k, shift=synthetic.PopulationShift(window_shift),
                                      bias=window_bias, first_encounter_id=first_id),
            patient_offset=offset,
        )
        first_id = int(frame["encounter_id"].astype("int64").max()) + 1
        offset = int(frame["patient_nbr"].astype("int64").max())
        later += uci.write_sequential_extracts(frame, landing_dir, 1, prefix=f"{stem}_w{k}_{label}")
    return DemoExtracts(training, later)


def _recording_gap(injected):
    """The third window's bias: the training bias at full rate, plus lab procedures and medications of the same
    group recorded at half (what the length-of-stay model relies on), so every cohort's champion is affected."""
    from clinical_mlops.ingestion import synthetic

    attribute, group = (injected.attribute, injected.group) if injected else ("race", "AfricanAmerican")
    return synthetic.SubgroupBias(attribute, group, utilisation_undercount_rate=1.0, history_unlinked_rate=1.0,
                                  documentation_undercount_rate=1.0)
