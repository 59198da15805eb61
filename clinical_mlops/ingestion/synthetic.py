"""Deterministic synthetic EHR encounters in the exact Diabetes 130-US hospitals format.

The generator simulates patients as sequences of inpatient encounters. Each encounter's
``readmitted`` outcome is drawn from a logistic model of its own columns (prior inpatient
visits strongest, then emergency/outpatient visits, discharge disposition, length of stay,
medications, diagnoses, age, primary-diagnosis group, insulin and HbA1c), plus a hidden
patient frailty; a readmission usually produces the patient's next encounter, so repeat
patients, ``number_inpatient`` and the label hang together as in the real extract. Marginals
are calibrated against the UCI release (aggregate frequencies only; no row is copied).

Output mirrors reading the real CSV with ``dtype=str, keep_default_na=False``: 50 columns in
:data:`clinical_mlops.ingestion.diabetes130.COLUMNS` order, every value a ``str``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, ndtr

from clinical_mlops.ingestion import diabetes130 as d130

__all__ = [
    "PopulationShift",
    "SubgroupBias",
    "SyntheticConfig",
    "generate_encounters",
    "write_synthetic_csv",
    "write_synthetic_extracts",
]


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
    invisible to this hospital. The outcome is unchanged, so a model that relies on prior
    visits under-detects readmissions in the group: a real recall gap.
    """

    attribute: str = "race"
    group: str = "AfricanAmerican"
    label_flip_rate: float = 0.0
    measurement_missing_rate: float = 0.0
    utilisation_undercount_rate: float = 0.0

    def __post_init__(self) -> None:
        allowed = {"race": (*d130.RACES, d130.MISSING), "gender": d130.GENDERS, "age": d130.AGE_BANDS}
        if self.attribute not in allowed:
            raise ValueError(
                f"SubgroupBias.attribute must be one of {sorted(allowed)}, got {self.attribute!r}"
            )
        if self.group not in allowed[self.attribute]:
            raise ValueError(f"{self.group!r} is not a value of {self.attribute!r}")
        for name in ("label_flip_rate", "measurement_missing_rate", "utilisation_undercount_rate"):
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


# ---------------------------------------------------------------------------------------------
# Calibration tables (aggregate frequencies of the UCI release, rounded; no rows)
# ---------------------------------------------------------------------------------------------

# ICD-9 code, then counts as diag_1, diag_2 and diag_3 (most frequent 300 codes, rounded to 5).
_ICD9_TABLE = """
428:6860:6660:4575 250:235:6070:11555 276:1890:6750:5175 414:6580:2650:3665
401:345:3735:8290 427:2765:5035:3955 599:1595:3290:1940 496:80:3305:2605
403:515:2825:2355 486:3510:1380:570 786:4015:645:585 780:2020:1490:1335
491:2275:1545:575 410:3615:550:210 682:2040:1435:885 584:1520:1650:965
250.02:675:2075:1370 585:75:1870:1990 707:255:2000:1360 518:1115:1355:855
411:255:2565:400 250.6:1185:895:1080 285:365:1520:1200 996:1965:455:280 425:85:1435:1135
493:1055:880:695 250.01:60:1525:915 715:2150:120:215 272:6:420:1970 38:1690:475:160
424:185:1070:1065 434:2030:185:55 250.8:1680:205:315 V45:5:410:1390 998:785:570:315
305:25:700:925 577:1055:400:150 560:875:395:305 413:115:1040:330 440:840:405:220
574:965:345:135 530:530:290:625 278:380:270:680 280:320:605:400 562:990:140:190
296:895:165:215 578:665:350:250 V57:1205:9:7 789:560:345:290 511:270:520:380
435:1015:95:60 295:445:410:305 402:450:335:375 820:1080:55:20 250.7:870:130:140
197:320:410:385 41:8:380:725 453:545:345:210 997:425:380:300 433:790:150:145
722:770:140:120 162:425:400:180 785:100:515:390 571:275:415:310 250.13:850:105:10
535:450:195:285 8:515:200:190 507:610:195:85 V58:230:155:500 250.4:265:170:430
426:290:300:270 458:425:145:285 787:265:210:360 198:240:320:240 287:85:310:390
788:40:390:355 733:365:185:200 724:440:145:150 648:285:340:105 250.11:625:80:20
250.82:410:175:115 244:10:150:540 799:70:315:310 438:85:265:320 730:230:245:185
536:150:200:265 70:45:275:280 415:450:105:35 404:260:205:125 294:115:155:315
784:150:185:235 250.03:200:235:135 569:285:175:105 790:145:225:195 303:70:285:205
593:100:120:340 250.12:415:95:40 558:335:110:110 250.41:90:230:200 590:335:135:45
V42:0:265:245 482:340:105:55 357:20:80:395 592:350:75:65 995:80:115:300 331:190:110:185
112:75:200:205 300:90:145:240 466:235:105:130 153:310:105:55 V15:0:130:335 412:1:100:345
515:125:160:155 396:30:180:230 263:10:170:250 492:30:220:170 202:105:180:120
250.92:50:200:150 342:8:225:165 591:20:235:140 443:110:75:205 348:150:140:85
572:240:85:50 531:275:45:50 284:60:170:140 781:110:125:135 728:125:130:105
304:30:170:160 553:140:75:140 311:55:80:215 824:315:20:20 564:145:80:125 250.1:315:15:20
729:105:90:145 196:25:215:105 V43:1:130:210 V10:0:100:240 416:70:95:170 250.81:185:95:50
600:205:40:80 250.42:90:105:130 575:215:65:45 444:155:105:45 812:235:40:30
710:25:165:110 552:235:50:15 805:190:80:25 721:180:60:55 286:45:115:125 288:90:75:115
E878:0:115:165 782:85:75:120 532:220:25:30 E849:0:55:220 V12:0:65:205 292:105:95:65
V85:0:170:95 211:105:55:100 459:95:55:105 185:175:25:50 557:195:40:15 437:90:70:85
719:55:90:95 E888:0:110:130 157:115:85:40 E885:0:110:115 618:160:35:30 681:110:40:75
576:95:85:45 441:130:40:55 340:45:120:60 218:125:45:55 397:5:70:150 174:145:25:45
290:85:50:80 293:55:75:80 595:95:65:50 540:200:10:1 731:4:80:125 250.22:155:40:15
436:175:25:8 291:90:75:45 455:95:30:80 204:25:115:65 135:25:115:65 808:135:45:20
189:125:50:25 490:90:55:55 581:20:80:95 596:50:60:90 794:25:60:110 398:130:40:30
345:115:45:40 250.51:1:65:130 431:170:15:7 242:20:95:75 203:35:90:65 274:95:25:70
386:145:20:20 332:55:45:90 250.5:8:65:110 V54:45:80:60 465:50:55:70 275:55:35:85
567:55:90:25 537:110:30:30 821:145:20:6 723:75:60:30 807:85:45:35 568:30:70:60
714:40:40:85 255:25:70:70 79:85:30:45 625:65:45:50 337:10:50:95 282:70:50:40 301:4:65:90
250.83:95:40:20 42:45:85:25 716:55:20:75 726:90:25:35 154:95:45:15 823:125:15:10
327:25:35:80 573:40:45:50 253:50:40:45 346:80:20:35 456:25:75:40 487:100:20:15
188:110:10:15 626:80:25:30 429:35:30:65 250.52:4:55:75 711:65:45:25 250.2:115:10:8
277:35:60:40 309:35:50:45 344:6:65:60 512:45:45:35 852:110:15:3 447:65:25:40
813:85:25:20 642:65:25:35 432:90:20:10 298:65:20:40 250.43:25:35:60 473:25:40:55
924:55:25:40 583:5:20:90 238:60:15:35 182:110:1:5 481:70:40:5 423:70:15:25 53:55:30:25
566:85:20:5 783:30:25:55 519:45:30:35 E932:0:40:70 654:90:2:15 727:50:25:30 620:45:30:30
205:25:60:20 738:55:25:25 362:8:30:65 555:50:20:30 289:20:40:40 155:55:35:10
420:65:25:10 873:20:40:40 V09:0:10:85 151:60:25:10 V62:0:65:30 478:30:30:30 V49:0:40:55
608:70:10:15 850:55:30:4 999:30:35:25 E942:0:35:50 349:35:35:15 446:25:30:30
333:35:15:30 V55:70:2:8 451:40:30:9 556:45:20:15 241:60:10:10 E879:0:20:60 959:45:10:20
516:35:30:15 616:25:25:30 802:30:25:20 150:25:35:15 969:60:6:10 611:35:25:15
442:35:15:25 281:20:20:35 614:20:20:30 199:15:15:45 V64:0:25:45 550:55:15:4 V46:0:10:60
"""

_DAYS = 3650.0  # the release covers ten years of admissions
_MAX_ENCOUNTERS_PER_PATIENT = 40

_RACE_VALUES = (*d130.RACES, d130.MISSING)  # code 5 = "?"
_RACE_WEIGHTS = np.array([76099, 19210, 2037, 1506, 641, 2273], dtype=float)
_RACE_SHIFT = np.array([-0.45, 0.9, 1.3, 0.4, 0.8, 0.0])  # log-weight change at strength 1
_GENDER_WEIGHTS = np.array([54708, 47055, 3], dtype=float)
# First-encounter age bands (slightly younger than the release: patients age while followed).
_AGE_WEIGHTS = np.array([170, 700, 1680, 3800, 9800, 17400, 22600, 26000, 16700, 2650], dtype=float)
_AGE_SHIFT_SLOPE = 0.45  # log-weight change per band above [60-70) at strength 1
_WEIGHT_WEIGHTS = np.array([48, 97, 897, 1336, 625, 145, 35, 11, 3], dtype=float)
_WEIGHT_RECORDED = 0.0314

_ADMISSION_TYPE_WEIGHTS = np.array([53990, 18480, 18869, 10, 4785, 5291, 21, 320], dtype=float)
_ADMISSION_SOURCES = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 17, 20, 22, 25])
_ADMISSION_SOURCE_BY_TYPE = np.array([
    [1677, 233, 65, 241, 597, 1995, 48515, 7, 1, 3, 1, 0, 1, 640, 12, 0, 2],
    [9224, 509, 25, 1822, 131, 181, 6128, 7, 119, 5, 0, 1, 0, 211, 117, 0, 0],
    [16187, 323, 94, 1068, 110, 82, 931, 1, 5, 0, 1, 0, 0, 23, 32, 12, 0],
    [2, 0, 0, 5, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
    [1703, 0, 0, 3, 0, 1, 131, 0, 0, 0, 0, 0, 0, 2947, 0, 0, 0],
    [595, 25, 3, 44, 17, 5, 1641, 1, 0, 0, 0, 0, 0, 2960, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [177, 14, 0, 4, 0, 0, 125, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
], dtype=float)
_GLUCOSE_TESTED_BY_TYPE = np.array([0.016, 0.012, 0.001, 0.0, 0.58, 0.28, 0.0, 0.0])

# Discharge dispositions: id -> (count, age tilt, length-of-stay tilt, effect on <30 logit).
_DISCHARGE = {
    1: (60234, 0.0, 0.0, 0.0), 3: (9600, 1.05, 0.6, 0.46), 6: (12000, 0.45, 0.5, 0.29),
    18: (3691, 0.1, 0.2, 0.29), 2: (2128, 0.0, -0.25, 0.69), 22: (1993, 0.35, 0.35, 1.38),
    5: (1184, 0.1, 0.3, 1.04), 25: (989, 0.0, 0.0, 0.0), 4: (815, 0.8, 0.4, 0.35),
    7: (623, -0.9, -0.3, 0.52), 23: (412, 0.0, 0.2, -0.29), 28: (139, -0.3, 0.1, 0.63),
    8: (108, 0.0, 0.3, 0.35), 15: (63, 0.3, 0.3, 0.69), 24: (48, 0.5, 0.2, 0.35),
    9: (21, 0.0, 0.0, 0.35), 17: (14, 0.0, 0.0, 0.35), 16: (11, 0.0, 0.0, 0.35),
    10: (6, 0.0, 0.0, 0.35), 27: (5, 0.0, 0.0, 0.35), 12: (3, 0.0, 0.0, 0.35),
}
_DEATH_DISCHARGE = {11: 1642, 13: 399, 14: 372, 19: 8, 20: 2, 21: 1}

_TIME_WEIGHTS = np.array([1396, 1693, 1745, 1368, 979, 741, 576, 431, 295, 230, 182, 142, 119, 102], float)
_PROCEDURE_WEIGHTS = np.array([4584, 2038, 1250, 928, 411, 302, 487], dtype=float)
_DIAGNOSES_WEIGHTS = np.array(
    [22, 101, 279, 544, 1120, 998, 1021, 1043, 4862, 2, 1, 1, 2, 1, 1, 4], dtype=float
)  # number_diagnoses 1..16
# Gaussian-copula correlation of latent time, labs, procedures, medications, diagnoses.
_LATENT_CORR = np.array([
    [1.00, 0.46, 0.25, 0.60, 0.30],
    [0.46, 1.00, 0.02, 0.30, 0.18],
    [0.25, 0.02, 1.00, 0.37, 0.07],
    [0.60, 0.30, 0.37, 1.00, 0.30],
    [0.30, 0.18, 0.07, 0.30, 1.00],
])

# Primary-diagnosis groups (Strack et al. 2014).
_GROUPS = ("circulatory", "respiratory", "digestive", "diabetes", "injury", "musculoskeletal",
           "genitourinary", "neoplasms", "other")
_DIAB = 3
_GROUP_TIME = np.array([-0.05, -0.05, 0.0, -0.02, 0.07, -0.15, -0.05, 0.3, 0.12])
_GROUP_LABS = np.array([0.03, 0.05, 0.07, 0.1, -0.12, -0.5, 0.12, -0.12, -0.03])
_GROUP_PROCEDURES = np.array([0.35, -0.4, 0.05, -0.25, 0.15, 0.2, -0.2, 0.4, -0.3])
_GROUP_MEDICATIONS = np.array([0.1, 0.02, -0.12, -0.2, 0.15, 0.42, -0.1, 0.15, -0.22])
_GROUP_READMIT = np.array([0.0, -0.29, -0.09, 0.31, 0.17, -0.35, -0.09, -0.21, 0.0])
# Primary-diagnosis group tilt by age (<40, 40-69, 70+) in log-weight units.
_GROUP_AGE_TILT = np.array([
    [-1.2, 0.0, 0.2, 1.1, 0.3, -0.3, 0.0, -0.5, 0.4],
    [-0.1, -0.1, 0.05, 0.15, -0.05, 0.15, -0.05, 0.1, 0.0],
    [0.15, 0.05, -0.05, -0.3, 0.0, -0.1, 0.05, -0.05, -0.05],
])

_AGE_READMIT = np.array([-0.6, -0.7, 0.25, 0.0, -0.05, -0.12, -0.02, 0.0, -0.02, -0.15])
_INSULIN_READMIT = np.array([-0.1, 0.0, 0.15, 0.25])  # No, Steady, Up, Down
_A1C_READMIT = np.array([0.0, -0.19, -0.12, -0.12])  # None, Norm, >7, >8

# Readmission model (logits) and follow-up: P(patient's next encounter is in the extract).
_LT30_INTERCEPT = -2.69
_GT30_INTERCEPT = -0.75
_FRAILTY_LT30 = 0.1
_FRAILTY_GT30 = 0.4
# <30 logit per log1p(prior inpatient / emergency / outpatient visits), per hospital day,
# per medication and per diagnosis (capped at 9).
_COEF_INPATIENT = 0.8
_COEF_EMERGENCY = 0.55
_COEF_OUTPATIENT = 0.3
_COEF_TIME = 0.07
_COEF_MEDICATIONS = 0.013
_COEF_DIAGNOSES = 0.07
_NEXT_ENCOUNTER_LOGIT = np.array([-4.8, 0.15, 0.6])  # after NO, >30, <30
_FRAILTY_NEXT = 0.6

# Utilisation in the year before admission (log-rate intercepts of Poisson-lognormal counts).
_INPATIENT_MU = -2.6
_EMERGENCY_MU = -3.35
_OUTPATIENT_MU = -2.75
_DEATH_INTERCEPT = -4.28

_MEDS_OTHER = tuple(m for m in d130.MEDICATIONS if m != "insulin")
_MED_COUNTS = {  # No, Steady, Up, Down
    "metformin": (81778, 18346, 1067, 575), "repaglinide": (100227, 1384, 110, 45),
    "nateglinide": (101063, 668, 24, 11), "chlorpropamide": (101680, 79, 6, 1),
    "glimepiride": (96575, 4670, 327, 194), "acetohexamide": (101765, 1, 0, 0),
    "glipizide": (89080, 11356, 770, 560), "glyburide": (91116, 9274, 812, 564),
    "tolbutamide": (101743, 23, 0, 0), "pioglitazone": (94438, 6976, 234, 118),
    "rosiglitazone": (95401, 6100, 178, 87), "acarbose": (101458, 295, 10, 3),
    "miglitol": (101728, 31, 2, 5), "troglitazone": (101763, 3, 0, 0),
    "tolazamide": (101727, 38, 1, 0), "examide": (1, 0, 0, 0), "citoglipton": (1, 0, 0, 0),
    "glyburide-metformin": (101060, 692, 8, 6), "glipizide-metformin": (101753, 13, 0, 0),
    "glimepiride-pioglitazone": (101765, 1, 0, 0), "metformin-rosiglitazone": (101764, 2, 0, 0),
    "metformin-pioglitazone": (101765, 1, 0, 0),
}
_CHANGE_WITHOUT_DOSE_CHANGE = 0.38  # P(change="Ch" | on medication, no Up/Down)

_PAYER_VALUES = (d130.MISSING, *d130.PAYER_CODES)
_PAYER_BY_AGE = np.array([  # age <40, 40-59, 60+; columns "?" then PAYER_CODES
    [2896, 440, 7, 22, 208, 157, 0, 569, 351, 693, 0, 173, 9, 76, 1, 458, 213, 11],
    [11457, 2488, 48, 285, 1188, 300, 0, 2546, 3115, 1579, 37, 579, 49, 315, 45, 1832, 993, 85],
    [25903, 1727, 91, 1630, 1137, 92, 1, 3159, 28973, 1260, 42, 281, 37, 201, 9, 2717, 1242, 39],
], dtype=float)

_SPECIALTY_COUNTS = {
    "InternalMedicine": 14635, "Emergency/Trauma": 7565, "Family/GeneralPractice": 7440,
    "Cardiology": 5352, "Surgery-General": 3099, "Nephrology": 1613, "Orthopedics": 1400,
    "Orthopedics-Reconstructive": 1233, "Radiologist": 1140, "Pulmonology": 871,
    "Psychiatry": 854, "Urology": 685, "ObstetricsandGynecology": 671,
    "Surgery-Cardiovascular/Thoracic": 652, "Gastroenterology": 564, "Surgery-Vascular": 533,
    "Surgery-Neuro": 468, "PhysicalMedicineandRehabilitation": 391, "Oncology": 348,
    "Pediatrics": 254, "Hematology/Oncology": 207, "Neurology": 203,
    "Pediatrics-Endocrinology": 159, "Otolaryngology": 125, "Endocrinology": 120,
    "Surgery-Thoracic": 109, "Psychology": 101, "Podiatry": 100, "Surgery-Cardiovascular": 98,
    "Pediatrics-CriticalCare": 87, "Hematology": 82, "Gynecology": 58, "Hospitalist": 57,
    "Radiology": 53, "Surgeon": 45, "Surgery-Plastic": 41, "Osteopath": 39,
    "Ophthalmology": 38, "InfectiousDiseases": 37, "SurgicalSpecialty": 33,
}
_SPECIALTY_MISSING = 49949 / 101766
# Specialties favoured by a primary-diagnosis group (weight x1.8).
_SPECIALTY_BY_GROUP = {
    0: ("Cardiology", "Surgery-Cardiovascular/Thoracic", "Surgery-Vascular", "Surgery-Cardiovascular"),
    1: ("Pulmonology", "Surgery-Thoracic"),
    2: ("Gastroenterology", "Surgery-General", "Surgery-Colon&Rectal"),
    3: ("Endocrinology", "Pediatrics-Endocrinology", "Endocrinology-Metabolism"),
    4: ("Orthopedics", "Orthopedics-Reconstructive", "Surgery-Neuro", "Emergency/Trauma"),
    5: ("Orthopedics", "Orthopedics-Reconstructive", "Surgery-Neuro", "Podiatry"),
    6: ("Nephrology", "Urology", "ObstetricsandGynecology", "Gynecology"),
    7: ("Oncology", "Hematology/Oncology", "Hematology"),
    8: ("Psychiatry", "Psychology", "InfectiousDiseases"),
}

_DIAG1_MISSING = 0.0002
_DIAG2_MISSING = 0.001
_DIAG3_MISSING = 0.002


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _icd9_group(code: str) -> int:
    """Index into ``_GROUPS`` of an ICD-9 code (V and E codes are "other")."""
    if code[0] in "VE":
        return 8
    value = float(code)
    major = int(value)
    if 390 <= major <= 459 or major == 785:
        return 0
    if 460 <= major <= 519 or major == 786:
        return 1
    if 520 <= major <= 579 or major == 787:
        return 2
    if major == 250:
        return 3
    if 800 <= major <= 999:
        return 4
    if 710 <= major <= 739:
        return 5
    if 580 <= major <= 629 or major == 788:
        return 6
    if 140 <= major <= 239:
        return 7
    return 8


def _parse_icd_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    entries = [item.split(":") for item in _ICD9_TABLE.split()]
    codes = np.array([e[0] for e in entries], dtype=object)
    weights = np.array([[float(x) for x in e[1:]] for e in entries])
    groups = np.array([_icd9_group(c) for c in codes], dtype=np.int64)
    return codes, weights, groups


_ICD_CODES, _ICD_WEIGHTS, _ICD_GROUPS = _parse_icd_table()


def _cdf(weights: np.ndarray) -> np.ndarray:
    """Row-wise cumulative distribution of non-negative weights; last column exactly 1."""
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    c = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    c[:, -1] = 1.0
    return c


def _flat(cdf: np.ndarray) -> np.ndarray:
    """Stack the rows of a CDF table into one increasing array (row r spans (r, r + 1])."""
    return (cdf + np.arange(cdf.shape[0])[:, None]).ravel()


def _draw(rng: np.random.Generator, cdf: np.ndarray, cond: np.ndarray | None = None,
          size: int | None = None) -> np.ndarray:
    """Category indices drawn from row ``cond`` of a CDF table (vectorised inverse CDF)."""
    if cond is None:
        return np.searchsorted(cdf[0] if cdf.ndim == 2 else cdf, rng.random(size), side="right")
    k = cdf.shape[1]
    flat = _flat(cdf)
    return np.searchsorted(flat, cond + rng.random(cond.size), side="right") - cond * k


def _from_latent(latent: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """Discrete values (0-based) from standard-normal latents through a CDF (Gaussian copula)."""
    idx = np.searchsorted(cdf, ndtr(latent), side="right")
    return np.minimum(idx, cdf.size - 1)


_CHOL = np.linalg.cholesky(_LATENT_CORR)
_TIME_CDF = _cdf(_TIME_WEIGHTS)[0]
_PROCEDURE_CDF = _cdf(_PROCEDURE_WEIGHTS)[0]
_DIAGNOSES_CDF = _cdf(_DIAGNOSES_WEIGHTS)[0]
_GENDER_CDF = _cdf(_GENDER_WEIGHTS)
_WEIGHT_CDF = _cdf(_WEIGHT_WEIGHTS)
_ADMISSION_TYPE_CDF = _cdf(_ADMISSION_TYPE_WEIGHTS)
_ADMISSION_SOURCE_CDF = _cdf(_ADMISSION_SOURCE_BY_TYPE)
_PAYER_CDF = _cdf(_PAYER_BY_AGE)
_DEATH_IDS = np.array(list(_DEATH_DISCHARGE))
_DEATH_CDF = _cdf(np.array(list(_DEATH_DISCHARGE.values()), dtype=float))
_MED_CDFS = {m: _cdf(np.array(_MED_COUNTS[m], dtype=float)) for m in _MEDS_OTHER}


def _discharge_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disposition ids, CDF per (age band, length of stay) and <30 effect per id."""
    ids = np.array(list(_DISCHARGE))
    base = np.log(np.array([v[0] for v in _DISCHARGE.values()], dtype=float))
    age_tilt = np.array([v[1] for v in _DISCHARGE.values()])
    time_tilt = np.array([v[2] for v in _DISCHARGE.values()])
    age_z = (np.arange(10) * 10 + 5 - 65) / 15.0
    time_z = (np.arange(1, 15) - 4.4) / 3.0
    logw = (base[None, None, :] + age_z[:, None, None] * age_tilt[None, None, :]
            + time_z[None, :, None] * time_tilt[None, None, :])
    w = np.exp(logw - logw.max(axis=2, keepdims=True)).reshape(140, ids.size)
    effect = np.zeros(max(d130.DISCHARGE_DISPOSITION_IDS) + 1)
    for k, v in _DISCHARGE.items():
        effect[k] = v[3]
    return ids, _cdf(w), effect


_DISCHARGE_IDS, _DISCHARGE_CDF, _DISCHARGE_READMIT = _discharge_tables()


def _diag1_cdf() -> np.ndarray:
    """Primary-diagnosis code CDF for the three age groups (<40, 40-69, 70+)."""
    w = _ICD_WEIGHTS[:, 0][None, :] * np.exp(_GROUP_AGE_TILT[:, _ICD_GROUPS])
    return _cdf(w)


_DIAG1_CDF = _diag1_cdf()
_DIAG2_CDF = _cdf(_ICD_WEIGHTS[:, 1])
_DIAG3_CDF = _cdf(_ICD_WEIGHTS[:, 2])


def _specialty_cdf() -> tuple[np.ndarray, np.ndarray]:
    """Specialty values ("?" first) and a CDF per primary-diagnosis group."""
    names = list(d130.MEDICAL_SPECIALTIES)
    values = np.array([d130.MISSING, *names], dtype=object)
    base = np.array([float(_SPECIALTY_COUNTS.get(n, 2)) for n in names])
    base *= (1.0 - _SPECIALTY_MISSING) / base.sum()
    rows = []
    for g in range(len(_GROUPS)):
        w = base.copy()
        for n in _SPECIALTY_BY_GROUP[g]:
            w[names.index(n)] *= 1.8
        w *= (1.0 - _SPECIALTY_MISSING) / w.sum()
        rows.append(np.concatenate([[_SPECIALTY_MISSING], w]))
    return values, _cdf(np.array(rows))


_SPECIALTY_VALUES, _SPECIALTY_CDF = _specialty_cdf()
_INT_STR = np.array([str(i) for i in range(256)], dtype=object)
_CSV_CHUNK_ROWS = 100_000
_CHUNK_STREAM = 0xC4C4  # domain separator of the per-chunk random streams


def _check_csv_safe() -> None:
    """Every generated text value must be writable without CSV quoting (see write_synthetic_csv)."""
    texts = [*_ICD_CODES, *_SPECIALTY_VALUES, *_PAYER_VALUES, *_RACE_VALUES, *d130.COLUMNS]
    texts += [v for vocabulary in d130.CATEGORICAL_VOCABULARIES.values() for v in vocabulary]
    unsafe = [t for t in texts if any(ch in t for ch in ',"\r\n')]
    if unsafe:
        raise AssertionError(f"values need CSV quoting: {unsafe}")


_check_csv_safe()


# ---------------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------------


def _new_patients(rng: np.random.Generator, n: int, shift: float) -> dict[str, np.ndarray]:
    """Patient-level attributes: demographics, entry time and hidden propensities."""
    race_w = _RACE_WEIGHTS * np.exp(shift * _RACE_SHIFT)
    age_w = _AGE_WEIGHTS * np.exp(shift * _AGE_SHIFT_SLOPE * (np.arange(10) - 6))
    band0 = _draw(rng, _cdf(age_w), size=n)
    hidden = rng.standard_normal((4, n))
    return {
        "race": _draw(rng, _cdf(race_w), size=n),
        "gender": _draw(rng, _GENDER_CDF, size=n),
        "age0": band0 * 10.0 + rng.random(n) * 10.0,
        "t0": rng.random(n) * _DAYS,
        "frailty": hidden[0],
        "emergency": hidden[1],
        "outpatient": 0.4 * hidden[1] + np.sqrt(0.84) * hidden[2],
        "diabetes": hidden[3],
    }


def _admit(rng: np.random.Generator, pat: dict[str, np.ndarray], idx: np.ndarray,
           t: np.ndarray, recent: np.ndarray, shift: float) -> dict[str, np.ndarray]:
    """One inpatient encounter for each patient in ``idx`` admitted at day ``t``."""
    m = idx.size
    frailty = pat["frailty"][idx]
    dm = pat["diabetes"][idx]
    age = pat["age0"][idx] + (t - pat["t0"][idx]) / 365.25
    band = np.minimum(age // 10, 9).astype(np.int64)
    age_z = (age - 65.0) / 15.0

    adm_type = _draw(rng, _ADMISSION_TYPE_CDF, size=m)  # 0-based: id - 1
    adm_source = _ADMISSION_SOURCES[_draw(rng, _ADMISSION_SOURCE_CDF, adm_type)]
    age_group = np.where(band < 4, 0, np.where(band < 7, 1, 2))
    diag1 = _draw(rng, _DIAG1_CDF, age_group)
    group = _ICD_GROUPS[diag1]
    diab = (group == _DIAB).astype(float)

    # Correlated severity latents -> length of stay, labs, procedures, medications, diagnoses.
    lat = rng.standard_normal((m, 5)) @ _CHOL.T
    time = 1 + _from_latent(lat[:, 0] + _GROUP_TIME[group], _TIME_CDF)
    labs = np.clip(np.rint(43.9 + 18.8 * (lat[:, 1] + _GROUP_LABS[group])), 1, 132)
    labs = np.where(rng.random(m) < 0.03, 1.0, labs).astype(np.int64)
    procedures = _from_latent(lat[:, 2] + _GROUP_PROCEDURES[group], _PROCEDURE_CDF)
    meds_latent = lat[:, 3] + _GROUP_MEDICATIONS[group] + 0.5 * shift
    medications = np.clip(np.rint(np.exp(2.66 + 0.47 * meds_latent)), 1, 81).astype(np.int64)
    diag_latent = (lat[:, 4] + 0.3 * frailty + 0.25 * age_z) / np.sqrt(1.0 + 0.09 + 0.0625) - 0.1
    diagnoses = 1 + _from_latent(diag_latent, _DIAGNOSES_CDF)

    # Visits in the year before: a hidden-propensity Poisson part plus earlier encounters here.
    noise = rng.standard_normal((3, m))
    inpatient_rate = np.exp(_INPATIENT_MU + 1.25 * frailty + 0.5 * noise[0] + 0.9 * shift)
    inpatient = rng.poisson(np.minimum(inpatient_rate, 8.0))
    inpatient = np.minimum(inpatient + recent, d130.COUNT_COLUMNS["number_inpatient"][1])
    emergency = rng.poisson(np.minimum(np.exp(_EMERGENCY_MU + 0.8 * frailty + 1.4 * pat["emergency"][idx]
                                              + 0.45 * noise[1] + 0.5 * shift), 30.0))
    emergency = np.minimum(emergency, d130.COUNT_COLUMNS["number_emergency"][1])
    outpatient = rng.poisson(np.minimum(np.exp(_OUTPATIENT_MU + 0.45 * frailty + 1.65 * pat["outpatient"][idx]
                                               + 0.4 * noise[2]), 30.0))
    outpatient = np.minimum(outpatient, d130.COUNT_COLUMNS["number_outpatient"][1])

    # Discharge: death/hospice (no later encounter, outcome NO) or a disposition by age and stay.
    death = rng.random(m) < expit(_DEATH_INTERCEPT + 0.9 * age_z + 0.4 * frailty + 0.25 * lat[:, 0])
    alive_disp = _DISCHARGE_IDS[_draw(rng, _DISCHARGE_CDF, band * 14 + (time - 1))]
    dead_disp = _DEATH_IDS[_draw(rng, _DEATH_CDF, size=m)]
    discharge = np.where(death, dead_disp, alive_disp)

    # Laboratory tests and insulin, driven by the diabetes propensity.
    a1c_tested = rng.random(m) < expit(-1.75 + 1.0 * diab - 0.35 * age_z + 0.35 * dm + 1.4 * shift)
    a1c_level = 0.9 * dm - 0.35 * age_z + 0.5 * diab + 0.8 * rng.standard_normal(m)
    a1c = np.where(a1c_tested, 1 + (a1c_level > -0.2).astype(np.int64) + (a1c_level > 0.5), 0)
    glu_tested = rng.random(m) < _GLUCOSE_TESTED_BY_TYPE[adm_type]
    glu_level = 0.7 * dm + 0.3 * diab + rng.standard_normal(m)
    glucose = np.where(glu_tested, 1 + (glu_level > 0.0).astype(np.int64) + (glu_level > 0.75), 0)
    on_insulin = rng.random(m) < expit(0.05 + 1.1 * diab - 0.3 * age_z + 0.7 * dm)
    dose_change = rng.random(m) < expit(-0.45 + 0.8 * diab + 0.3 * dm)
    up = rng.random(m) < 0.48
    insulin = np.where(on_insulin, np.where(dose_change, np.where(up, 2, 3), 1), 0)

    # Readmission outcome.
    score = (_COEF_INPATIENT * np.log1p(inpatient) + _COEF_EMERGENCY * np.log1p(emergency)
             + _COEF_OUTPATIENT * np.minimum(np.log1p(outpatient), 1.2) + _DISCHARGE_READMIT[discharge]
             + _COEF_TIME * (np.minimum(time, 8) - 4.4) + _COEF_MEDICATIONS * (medications - 16)
             + _COEF_DIAGNOSES * (np.minimum(diagnoses, 9) - 7.4)
             + _AGE_READMIT[band] + _GROUP_READMIT[group] + _INSULIN_READMIT[insulin] + _A1C_READMIT[a1c])
    u = rng.random((3, m))
    lt30 = u[0] < expit(_LT30_INTERCEPT + score + _FRAILTY_LT30 * frailty)
    gt30 = u[1] < expit(_GT30_INTERCEPT + 0.7 * score + _FRAILTY_GT30 * frailty)
    readmitted = np.where(death, 0, np.where(lt30, 2, np.where(gt30, 1, 0)))
    follow = ~death & (u[2] < expit(_NEXT_ENCOUNTER_LOGIT[readmitted] + _FRAILTY_NEXT * frailty))
    gap = np.where(  # days from discharge to the next admission
        readmitted == 2,
        rng.uniform(1.0, 30.0, m),
        np.where(readmitted == 1, 30.0 + rng.exponential(200.0, m), 60.0 + rng.exponential(400.0, m)),
    )

    return {
        "patient": idx, "t": t, "band": band, "admission_type_id": adm_type + 1,
        "admission_source_id": adm_source, "discharge_disposition_id": discharge,
        "time_in_hospital": time, "num_lab_procedures": labs, "num_procedures": procedures,
        "num_medications": medications, "number_outpatient": outpatient,
        "number_emergency": emergency, "number_inpatient": inpatient, "diag_1": diag1,
        "number_diagnoses": diagnoses, "max_glu_serum": glucose, "A1Cresult": a1c,
        "insulin": insulin, "readmitted": readmitted, "group": group,
        "_follow": follow, "_next_t": t + time + gap,
    }


def _simulate(
    rng: np.random.Generator, n_patients: int, shift: float
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Simulate every encounter of ``n_patients`` new patients; rows grouped by visit number."""
    pat = _new_patients(rng, n_patients, shift)
    idx = np.arange(n_patients)
    t = pat["t0"].copy()
    history = np.empty((n_patients, 0))
    blocks: list[dict[str, np.ndarray]] = []
    for visit in range(_MAX_ENCOUNTERS_PER_PATIENT):
        recent = (history >= (t - 365.0)[:, None]).sum(axis=1)
        block = _admit(rng, pat, idx, t, recent, shift)
        blocks.append(block)
        follow = block.pop("_follow")
        next_t = block.pop("_next_t")
        if visit == _MAX_ENCOUNTERS_PER_PATIENT - 1 or not follow.any():
            break
        history = np.concatenate([history[:, -24:], t[:, None]], axis=1)[follow]
        idx, t = idx[follow], next_t[follow]
    rows = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    rows["visit"] = np.concatenate([np.full(b["patient"].size, v) for v, b in enumerate(blocks)])
    return pat, rows


def _int_strings(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    if values.size and 0 <= values.min() and values.max() < _INT_STR.size:
        return _INT_STR[values]
    return np.array(list(map(str, values.tolist())), dtype=object)


def _bias_mask(bias: SubgroupBias, race: np.ndarray, gender: np.ndarray, band: np.ndarray) -> np.ndarray:
    if bias.attribute == "race":
        return race == _RACE_VALUES.index(bias.group)
    if bias.attribute == "gender":
        return gender == d130.GENDERS.index(bias.group)
    return band == d130.AGE_BANDS.index(bias.group)


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: np.array([], dtype=object) for c in d130.COLUMNS}, columns=list(d130.COLUMNS))


def generate_encounters(config: SyntheticConfig) -> pd.DataFrame:
    """Synthetic encounters: all 50 Diabetes 130 columns as ``str``, ordered by encounter_id."""
    return _generate(config)[0]


def _generate(
    config: SyntheticConfig, *, chunk: int | None = None, patient_offset: int = 0
) -> tuple[pd.DataFrame, int, int]:
    """The frame, its last encounter_id and its largest patient_nbr.

    ``chunk`` (for :func:`write_synthetic_extracts`) derives the random streams from
    ``(seed, chunk)``; ``patient_offset`` is added to every patient number.
    """
    n = int(config.n_encounters)
    if n == 0:
        return _empty_frame(), int(config.first_encounter_id) - 1, patient_offset
    entropy = int(config.seed) if chunk is None else [int(config.seed), _CHUNK_STREAM, int(chunk)]
    rng = np.random.default_rng(entropy)
    shift = float(config.shift.strength)

    # Simulate whole patient histories until there are enough encounters, then keep the first n
    # (the last patient kept may lose the tail of their history).
    pats: list[dict[str, np.ndarray]] = []
    rowsets: list[dict[str, np.ndarray]] = []
    n_patients = total = 0
    while total < n:
        batch = int((n - total) / 1.3) + 64
        pat, rows = _simulate(rng, batch, shift)
        rows["patient"] = rows["patient"] + n_patients
        pats.append(pat)
        rowsets.append(rows)
        n_patients += batch
        total += rows["patient"].size
    pat = {k: np.concatenate([p[k] for p in pats]) for k in pats[0]}
    rows = {k: np.concatenate([r[k] for r in rowsets]) for k in rowsets[0]}
    per_patient = np.bincount(rows["patient"], minlength=n_patients)
    before = np.cumsum(per_patient) - per_patient
    keep_visits = np.clip(n - before, 0, per_patient)
    keep = rows["visit"] < keep_visits[rows["patient"]]
    order = np.flatnonzero(keep)
    order = order[np.argsort(rows["t"][order], kind="stable")]  # encounter_id follows time
    rows = {k: v[order] for k, v in rows.items()}
    patient = rows["patient"]
    band = rows["band"]
    group = rows["group"]

    # Columns that do not feed the outcome, drawn for the kept rows only.
    weight_recorded = rng.random(n) < _WEIGHT_RECORDED
    weight = np.where(weight_recorded, _draw(rng, _WEIGHT_CDF, size=n), -1)
    payer = _draw(rng, _PAYER_CDF, np.where(band < 4, 0, np.where(band < 6, 1, 2)))
    specialty = _draw(rng, _SPECIALTY_CDF, group)
    diag2 = _draw(rng, _DIAG2_CDF, size=n)
    diag3 = _draw(rng, _DIAG3_CDF, size=n)
    diagnoses = rows["number_diagnoses"]
    diag_missing = rng.random((3, n))
    diag1_missing = diag_missing[0] < _DIAG1_MISSING
    diag2_missing = (diagnoses < 2) | (diag_missing[1] < _DIAG2_MISSING)
    diag3_missing = (diagnoses < 3) | (diag_missing[2] < _DIAG3_MISSING)
    meds = {m: _draw(rng, _MED_CDFS[m], size=n) for m in _MEDS_OTHER}
    meds["insulin"] = rows["insulin"]
    dose_changed = np.zeros(n, dtype=bool)
    on_medication = np.zeros(n, dtype=bool)
    for states in meds.values():
        dose_changed |= states >= 2
        on_medication |= states > 0
    change = dose_changed | (on_medication & (rng.random(n) < _CHANGE_WITHOUT_DOSE_CHANGE))

    # Identifiers: encounter_id increases with admission time; patient_nbr loosely with entry.
    gaps = np.maximum(1, np.rint(np.exp(rng.normal(7.0, 1.5, n)))).astype(np.int64)
    gaps[0] = 0
    encounter_id = int(config.first_encounter_id) + np.cumsum(gaps)
    kept_patients, patient_pos = np.unique(patient, return_inverse=True)
    n_kept = kept_patients.size
    numbers = 135 + np.cumsum(rng.integers(1, 5300, n_kept))
    entry_key = pat["t0"][kept_patients] / _DAYS + rng.normal(0.0, 0.35, n_kept)
    patient_nbr = np.empty(n_kept, dtype=np.int64)
    patient_nbr[np.argsort(entry_key, kind="stable")] = numbers
    patient_nbr = patient_nbr[patient_pos] + int(patient_offset)

    race = pat["race"][patient]
    gender = pat["gender"][patient]
    readmitted = rows["readmitted"].copy()
    a1c = rows["A1Cresult"].copy()
    glucose = rows["max_glu_serum"].copy()
    if config.bias is not None:
        # Own random stream, so rows outside the group are identical to the unbiased output.
        brng = np.random.default_rng([int(config.seed), 0xB1A5] + ([] if chunk is None else [int(chunk)]))
        u = brng.random((4, n))
        in_group = _bias_mask(config.bias, race, gender, band)
        readmitted[in_group & (readmitted == 2) & (u[0] < config.bias.label_flip_rate)] = 0
        a1c[in_group & (u[1] < config.bias.measurement_missing_rate)] = 0
        glucose[in_group & (u[2] < config.bias.measurement_missing_rate)] = 0
        hidden = in_group & (u[3] < config.bias.utilisation_undercount_rate)
        if hidden.any():
            rows = dict(rows)
            for column in ("number_inpatient", "number_emergency", "number_outpatient"):
                rows[column] = np.where(hidden, 0, rows[column])

    def pick(values: tuple[str, ...] | np.ndarray, codes: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=object)[codes]

    missing = d130.MISSING
    out: dict[str, np.ndarray] = {
        "encounter_id": _int_strings(encounter_id),
        "patient_nbr": _int_strings(patient_nbr),
        "race": pick(_RACE_VALUES, race),
        "gender": pick(d130.GENDERS, gender),
        "age": pick(d130.AGE_BANDS, band),
        "weight": pick((*d130.WEIGHT_BANDS, missing), weight),  # -1 -> "?"
        "admission_type_id": _int_strings(rows["admission_type_id"]),
        "discharge_disposition_id": _int_strings(rows["discharge_disposition_id"]),
        "admission_source_id": _int_strings(rows["admission_source_id"]),
        "payer_code": pick(_PAYER_VALUES, payer),
        "medical_specialty": _SPECIALTY_VALUES[specialty],
        "diag_1": np.where(diag1_missing, missing, _ICD_CODES[rows["diag_1"]]),
        "diag_2": np.where(diag2_missing, missing, _ICD_CODES[diag2]),
        "diag_3": np.where(diag3_missing, missing, _ICD_CODES[diag3]),
        "max_glu_serum": pick(d130.GLUCOSE_RESULTS, glucose),
        "A1Cresult": pick(d130.A1C_RESULTS, a1c),
        "change": pick(d130.CHANGE_VALUES, change.astype(np.int64)),
        "diabetesMed": pick(d130.YES_NO, (~on_medication).astype(np.int64)),
        "readmitted": pick(d130.READMITTED_VALUES, readmitted),
    }
    for column in d130.COUNT_COLUMNS:
        out[column] = _int_strings(rows[column])
    for med in d130.MEDICATIONS:
        out[med] = pick(d130.MEDICATION_STATES, meds[med])
    for column in ("diag_1", "diag_2", "diag_3"):
        out[column] = out[column].astype(object)
    frame = pd.DataFrame({c: out[c] for c in d130.COLUMNS}, columns=list(d130.COLUMNS))
    return frame, int(encounter_id[-1]), int(patient_nbr.max())


def _write_rows(handle, frame: pd.DataFrame) -> None:
    """Append ``frame``'s rows as CSV lines (no value needs quoting, see ``_check_csv_safe``)."""
    columns = [frame[c].to_numpy() for c in frame.columns]
    for start in range(0, len(frame), _CSV_CHUNK_ROWS):
        chunk = [col[start:start + _CSV_CHUNK_ROWS] for col in columns]
        handle.write("".join([",".join(row) + "\n" for row in zip(*chunk)]))


def write_synthetic_csv(config: SyntheticConfig, path: Path) -> Path:
    """Write :func:`generate_encounters` output as CSV ("\\n" line ends, no index); returns ``path``.

    No generated value contains a comma, quote or newline, so rows are joined directly (the
    bytes equal ``DataFrame.to_csv(index=False, lineterminator="\\n")``, several times faster).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = generate_encounters(config)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(frame.columns) + "\n")
        _write_rows(handle, frame)
    return path


def write_synthetic_extracts(
    config: SyntheticConfig,
    directory: Path,
    *,
    rows_per_extract: int = 1_000_000,
    chunk_rows: int = 250_000,
    prefix: str = "synthetic_",
) -> list[Path]:
    """Write ``config.n_encounters`` encounters as extract CSVs of ``rows_per_extract`` rows each.

    Generated ``chunk_rows`` at a time, so memory is bounded by the chunk, not by the total.
    Chunk *k* draws from its own random streams, derived from ``(config.seed, k)``, and is a
    population of its own patients: its encounter ids start after the previous chunk's last
    id and its patient numbers above the previous chunk's largest, so no id repeats across
    chunks or extracts. Deterministic for a given config and sizes. Files are named
    ``<prefix><nnn>.csv`` (arrival order) and returned in that order.
    """
    if rows_per_extract < 1 or chunk_rows < 1:
        raise ValueError("rows_per_extract and chunk_rows must be >= 1")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    total = int(config.n_encounters)
    n_files = max(1, -(-total // rows_per_extract))
    width = max(3, len(str(n_files)))
    header = ",".join(d130.COLUMNS) + "\n"
    next_id, patient_offset, chunk = int(config.first_encounter_id), 0, 0
    paths: list[Path] = []
    for index in range(n_files):
        path = directory / f"{prefix}{index + 1:0{width}d}.csv"
        in_file = min(rows_per_extract, total - index * rows_per_extract)
        with path.open("w", encoding="utf-8", newline="") as handle:
            handle.write(header)
            written = 0
            while written < in_file:
                size = min(chunk_rows, in_file - written)
                part = SyntheticConfig(
                    n_encounters=size, seed=config.seed, shift=config.shift, bias=config.bias,
                    first_encounter_id=next_id,
                )
                frame, last_id, max_patient = _generate(part, chunk=chunk, patient_offset=patient_offset)
                _write_rows(handle, frame)
                next_id, patient_offset, chunk = last_id + 1, max_patient, chunk + 1
                written += size
                del frame
        paths.append(path)
    return paths
