"""The Diabetes 130-US hospitals extract format: columns, vocabularies and conventions.

Facts here come from the UCI release (id 296) and are shared by the synthetic generator,
the real-data loader and the raw validation schema, so all three agree on one format.
"""

from __future__ import annotations

__all__ = [
    "A1C_RESULTS",
    "ADMISSION_SOURCE_IDS",
    "ADMISSION_TYPE_IDS",
    "AGE_BANDS",
    "CATEGORICAL_VOCABULARIES",
    "CHANGE_VALUES",
    "COLUMNS",
    "COUNT_COLUMNS",
    "DEATH_OR_HOSPICE_DISPOSITIONS",
    "DISCHARGE_DISPOSITION_IDS",
    "ENCOUNTER_ID",
    "GENDERS",
    "GLUCOSE_RESULTS",
    "ICD9_PATTERN",
    "MEDICAL_SPECIALTIES",
    "MEDICATIONS",
    "MEDICATION_STATES",
    "MISSING",
    "NOT_MEASURED",
    "NULLABLE_COLUMNS",
    "PATIENT_ID",
    "PAYER_CODES",
    "RACES",
    "READMITTED_VALUES",
    "TARGET_COLUMN",
    "WEIGHT_BANDS",
    "YES_NO",
]

MISSING = "?"
"""Marker for a missing value in every column of the extract."""

NOT_MEASURED = "None"
"""Literal used by ``max_glu_serum`` and ``A1Cresult`` for "test not performed" (not missing)."""

ENCOUNTER_ID = "encounter_id"
PATIENT_ID = "patient_nbr"
TARGET_COLUMN = "readmitted"

MEDICATIONS: tuple[str, ...] = (
    "metformin", "repaglinide", "nateglinide", "chlorpropamide", "glimepiride",
    "acetohexamide", "glipizide", "glyburide", "tolbutamide", "pioglitazone",
    "rosiglitazone", "acarbose", "miglitol", "troglitazone", "tolazamide", "examide",
    "citoglipton", "insulin", "glyburide-metformin", "glipizide-metformin",
    "glimepiride-pioglitazone", "metformin-rosiglitazone", "metformin-pioglitazone",
)

COUNT_COLUMNS: dict[str, tuple[int, int]] = {
    # column: (minimum, maximum) seen in the release, widened a little for plausibility
    "time_in_hospital": (1, 14),
    "num_lab_procedures": (1, 200),
    "num_procedures": (0, 10),
    "num_medications": (1, 120),
    "number_outpatient": (0, 100),
    "number_emergency": (0, 100),
    "number_inpatient": (0, 50),
    "number_diagnoses": (1, 20),
}

COLUMNS: tuple[str, ...] = (
    "encounter_id", "patient_nbr", "race", "gender", "age", "weight",
    "admission_type_id", "discharge_disposition_id", "admission_source_id",
    "time_in_hospital", "payer_code", "medical_specialty", "num_lab_procedures",
    "num_procedures", "num_medications", "number_outpatient", "number_emergency",
    "number_inpatient", "diag_1", "diag_2", "diag_3", "number_diagnoses",
    "max_glu_serum", "A1Cresult", *MEDICATIONS, "change", "diabetesMed", "readmitted",
)
assert len(COLUMNS) == 50

AGE_BANDS: tuple[str, ...] = tuple(f"[{lo}-{lo + 10})" for lo in range(0, 100, 10))
WEIGHT_BANDS: tuple[str, ...] = (
    "[0-25)", "[25-50)", "[50-75)", "[75-100)", "[100-125)", "[125-150)",
    "[150-175)", "[175-200)", ">200",
)
RACES: tuple[str, ...] = ("Caucasian", "AfricanAmerican", "Hispanic", "Other", "Asian")
GENDERS: tuple[str, ...] = ("Female", "Male", "Unknown/Invalid")
ADMISSION_TYPE_IDS: tuple[int, ...] = tuple(range(1, 9))
DISCHARGE_DISPOSITION_IDS: tuple[int, ...] = tuple(range(1, 31))
ADMISSION_SOURCE_IDS: tuple[int, ...] = tuple(range(1, 27))
DEATH_OR_HOSPICE_DISPOSITIONS: tuple[int, ...] = (11, 13, 14, 19, 20, 21)
PAYER_CODES: tuple[str, ...] = (
    "BC", "CH", "CM", "CP", "DM", "FR", "HM", "MC", "MD", "MP", "OG", "OT", "PO",
    "SI", "SP", "UN", "WC",
)
MEDICAL_SPECIALTIES: tuple[str, ...] = (
    "AllergyandImmunology", "Anesthesiology", "Anesthesiology-Pediatric", "Cardiology",
    "Cardiology-Pediatric", "DCPTEAM", "Dentistry", "Dermatology", "Emergency/Trauma",
    "Endocrinology", "Endocrinology-Metabolism", "Family/GeneralPractice",
    "Gastroenterology", "Gynecology", "Hematology", "Hematology/Oncology", "Hospitalist",
    "InfectiousDiseases", "InternalMedicine", "Nephrology", "Neurology", "Neurophysiology",
    "Obsterics&Gynecology-GynecologicOnco", "Obstetrics", "ObstetricsandGynecology",
    "Oncology", "Ophthalmology", "Orthopedics", "Orthopedics-Reconstructive", "Osteopath",
    "Otolaryngology", "OutreachServices", "Pathology", "Pediatrics",
    "Pediatrics-AllergyandImmunology", "Pediatrics-CriticalCare",
    "Pediatrics-EmergencyMedicine", "Pediatrics-Endocrinology",
    "Pediatrics-Hematology-Oncology", "Pediatrics-InfectiousDiseases",
    "Pediatrics-Neurology", "Pediatrics-Pulmonology", "Perinatology",
    "PhysicalMedicineandRehabilitation", "PhysicianNotFound", "Podiatry", "Proctology",
    "Psychiatry", "Psychiatry-Addictive", "Psychiatry-Child/Adolescent", "Psychology",
    "Pulmonology", "Radiologist", "Radiology", "Resident", "Rheumatology", "Speech",
    "SportsMedicine", "Surgeon", "Surgery-Cardiovascular", "Surgery-Cardiovascular/Thoracic",
    "Surgery-Colon&Rectal", "Surgery-General", "Surgery-Maxillofacial", "Surgery-Neuro",
    "Surgery-Pediatric", "Surgery-Plastic", "Surgery-PlasticwithinHeadandNeck",
    "Surgery-Thoracic", "Surgery-Vascular", "SurgicalSpecialty", "Urology",
)
GLUCOSE_RESULTS: tuple[str, ...] = ("None", "Norm", ">200", ">300")
A1C_RESULTS: tuple[str, ...] = ("None", "Norm", ">7", ">8")
MEDICATION_STATES: tuple[str, ...] = ("No", "Steady", "Up", "Down")
CHANGE_VALUES: tuple[str, ...] = ("No", "Ch")
YES_NO: tuple[str, ...] = ("Yes", "No")
READMITTED_VALUES: tuple[str, ...] = ("NO", ">30", "<30")

ICD9_PATTERN = r"^(\d{1,3}(\.\d{1,2})?|V\d{2}(\.\d{1,2})?|E\d{3}(\.\d{1,2})?)$"
"""ICD-9-CM codes as they appear in diag_1..3: numeric without zero padding, V or E codes."""

CATEGORICAL_VOCABULARIES: dict[str, tuple[str, ...]] = {
    "race": RACES,
    "gender": GENDERS,
    "age": AGE_BANDS,
    "weight": WEIGHT_BANDS,
    "admission_type_id": tuple(str(i) for i in ADMISSION_TYPE_IDS),
    "discharge_disposition_id": tuple(str(i) for i in DISCHARGE_DISPOSITION_IDS),
    "admission_source_id": tuple(str(i) for i in ADMISSION_SOURCE_IDS),
    "payer_code": PAYER_CODES,
    "medical_specialty": MEDICAL_SPECIALTIES,
    "max_glu_serum": GLUCOSE_RESULTS,
    "A1Cresult": A1C_RESULTS,
    **{med: MEDICATION_STATES for med in MEDICATIONS},
    "change": CHANGE_VALUES,
    "diabetesMed": YES_NO,
    "readmitted": READMITTED_VALUES,
}
"""Allowed values per categorical column, not counting the missing marker ``?``."""

NULLABLE_COLUMNS: frozenset[str] = frozenset(
    {"race", "gender", "weight", "payer_code", "medical_specialty", "diag_1", "diag_2", "diag_3"}
)
"""Columns in which the missing marker ``?`` is allowed."""
