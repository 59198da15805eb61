-- Base features of every cohort on a Diabetes 130 source (diabetes130, synthetic_diabetes130).
-- Input: source_rows, the source's validated, typed rows (patient ids pseudonymised as patient_key).
-- One row per encounter; a cohort selects its features, target and exclusions from this. The
-- sensitive attributes (race, gender, age_band) come from the source contract, not from here.
WITH encounters AS (
    SELECT * FROM source_rows
),
icd AS (
    SELECT
        encounter_id,
        -- ICD-9 chapter groups used in Strack et al. (2014)
        list_transform([diag_1, diag_2, diag_3], lambda code: CASE
            WHEN code IS NULL THEN 'missing'
            WHEN code LIKE 'V%' OR code LIKE 'E%' THEN 'external_or_supplementary'
            WHEN code LIKE '250%' THEN 'diabetes'
            WHEN TRY_CAST(code AS DOUBLE) BETWEEN 390 AND 459 OR TRY_CAST(code AS DOUBLE) BETWEEN 785 AND 785.99 THEN 'circulatory'
            WHEN TRY_CAST(code AS DOUBLE) BETWEEN 460 AND 519 OR TRY_CAST(code AS DOUBLE) BETWEEN 786 AND 786.99 THEN 'respiratory'
            WHEN TRY_CAST(code AS DOUBLE) BETWEEN 520 AND 579 OR TRY_CAST(code AS DOUBLE) BETWEEN 787 AND 787.99 THEN 'digestive'
            WHEN TRY_CAST(code AS DOUBLE) BETWEEN 800 AND 999.99 THEN 'injury'
            WHEN TRY_CAST(code AS DOUBLE) BETWEEN 710 AND 739.99 THEN 'musculoskeletal'
            WHEN TRY_CAST(code AS DOUBLE) BETWEEN 580 AND 629.99 OR TRY_CAST(code AS DOUBLE) BETWEEN 788 AND 788.99 THEN 'genitourinary'
            WHEN TRY_CAST(code AS DOUBLE) BETWEEN 140 AND 239.99 THEN 'neoplasms'
            ELSE 'other'
        END) AS groups
    FROM encounters
)
SELECT
    e.encounter_id,
    e.patient_key,
    e.extract_id,
    e.row_number,
    -- demographics and admission context
    CAST(regexp_extract(e.age, '\[(\d+)-', 1) AS INTEGER) + 5 AS age_years_mid,
    CAST(e.admission_type_id AS VARCHAR) AS admission_type,
    CAST(e.admission_source_id AS VARCHAR) AS admission_source,
    CAST(e.discharge_disposition_id AS VARCHAR) AS discharge_disposition,
    coalesce(e.medical_specialty, 'Unknown') AS medical_specialty,
    coalesce(e.payer_code, 'Unknown') AS payer_code,
    -- length of stay and intensity of care
    e.time_in_hospital,
    e.num_lab_procedures,
    e.num_procedures,
    e.num_medications,
    e.number_diagnoses,
    -- prior utilisation, as reported and as seen in the warehouse (earlier encounters only)
    e.number_outpatient,
    e.number_emergency,
    e.number_inpatient,
    e.number_outpatient + e.number_emergency + e.number_inpatient AS prior_visits_total,
    CAST(count(*) OVER (PARTITION BY e.patient_key ORDER BY e.encounter_id
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS INTEGER) AS prior_encounters_seen,
    -- diagnoses grouped by ICD-9 chapter
    icd.groups[1] AS primary_diagnosis_group,
    icd.groups[2] AS secondary_diagnosis_group,
    icd.groups[3] AS additional_diagnosis_group,
    CAST(list_contains(icd.groups, 'diabetes') AS INTEGER) AS any_diabetes_diagnosis,
    -- laboratory results ("None" means not measured)
    e."A1Cresult" AS a1c_result,
    e.max_glu_serum AS glucose_result,
    CAST(e."A1Cresult" <> 'None' AS INTEGER) AS a1c_measured,
    CAST(e.max_glu_serum <> 'None' AS INTEGER) AS glucose_measured,
    -- medication summaries over the 23 diabetes medications
    CAST((
        CAST(e."metformin" <> 'No' AS INTEGER)
        + CAST(e."repaglinide" <> 'No' AS INTEGER)
        + CAST(e."nateglinide" <> 'No' AS INTEGER)
        + CAST(e."chlorpropamide" <> 'No' AS INTEGER)
        + CAST(e."glimepiride" <> 'No' AS INTEGER)
        + CAST(e."acetohexamide" <> 'No' AS INTEGER)
        + CAST(e."glipizide" <> 'No' AS INTEGER)
        + CAST(e."glyburide" <> 'No' AS INTEGER)
        + CAST(e."tolbutamide" <> 'No' AS INTEGER)
        + CAST(e."pioglitazone" <> 'No' AS INTEGER)
        + CAST(e."rosiglitazone" <> 'No' AS INTEGER)
        + CAST(e."acarbose" <> 'No' AS INTEGER)
        + CAST(e."miglitol" <> 'No' AS INTEGER)
        + CAST(e."troglitazone" <> 'No' AS INTEGER)
        + CAST(e."tolazamide" <> 'No' AS INTEGER)
        + CAST(e."examide" <> 'No' AS INTEGER)
        + CAST(e."citoglipton" <> 'No' AS INTEGER)
        + CAST(e."insulin" <> 'No' AS INTEGER)
        + CAST(e."glyburide-metformin" <> 'No' AS INTEGER)
        + CAST(e."glipizide-metformin" <> 'No' AS INTEGER)
        + CAST(e."glimepiride-pioglitazone" <> 'No' AS INTEGER)
        + CAST(e."metformin-rosiglitazone" <> 'No' AS INTEGER)
        + CAST(e."metformin-pioglitazone" <> 'No' AS INTEGER)
    ) AS INTEGER) AS medications_prescribed,
    CAST((
        CAST(e."metformin" = 'Up' AS INTEGER)
        + CAST(e."repaglinide" = 'Up' AS INTEGER)
        + CAST(e."nateglinide" = 'Up' AS INTEGER)
        + CAST(e."chlorpropamide" = 'Up' AS INTEGER)
        + CAST(e."glimepiride" = 'Up' AS INTEGER)
        + CAST(e."acetohexamide" = 'Up' AS INTEGER)
        + CAST(e."glipizide" = 'Up' AS INTEGER)
        + CAST(e."glyburide" = 'Up' AS INTEGER)
        + CAST(e."tolbutamide" = 'Up' AS INTEGER)
        + CAST(e."pioglitazone" = 'Up' AS INTEGER)
        + CAST(e."rosiglitazone" = 'Up' AS INTEGER)
        + CAST(e."acarbose" = 'Up' AS INTEGER)
        + CAST(e."miglitol" = 'Up' AS INTEGER)
        + CAST(e."troglitazone" = 'Up' AS INTEGER)
        + CAST(e."tolazamide" = 'Up' AS INTEGER)
        + CAST(e."examide" = 'Up' AS INTEGER)
        + CAST(e."citoglipton" = 'Up' AS INTEGER)
        + CAST(e."insulin" = 'Up' AS INTEGER)
        + CAST(e."glyburide-metformin" = 'Up' AS INTEGER)
        + CAST(e."glipizide-metformin" = 'Up' AS INTEGER)
        + CAST(e."glimepiride-pioglitazone" = 'Up' AS INTEGER)
        + CAST(e."metformin-rosiglitazone" = 'Up' AS INTEGER)
        + CAST(e."metformin-pioglitazone" = 'Up' AS INTEGER)
    ) AS INTEGER) AS medications_dosage_up,
    CAST((
        CAST(e."metformin" = 'Down' AS INTEGER)
        + CAST(e."repaglinide" = 'Down' AS INTEGER)
        + CAST(e."nateglinide" = 'Down' AS INTEGER)
        + CAST(e."chlorpropamide" = 'Down' AS INTEGER)
        + CAST(e."glimepiride" = 'Down' AS INTEGER)
        + CAST(e."acetohexamide" = 'Down' AS INTEGER)
        + CAST(e."glipizide" = 'Down' AS INTEGER)
        + CAST(e."glyburide" = 'Down' AS INTEGER)
        + CAST(e."tolbutamide" = 'Down' AS INTEGER)
        + CAST(e."pioglitazone" = 'Down' AS INTEGER)
        + CAST(e."rosiglitazone" = 'Down' AS INTEGER)
        + CAST(e."acarbose" = 'Down' AS INTEGER)
        + CAST(e."miglitol" = 'Down' AS INTEGER)
        + CAST(e."troglitazone" = 'Down' AS INTEGER)
        + CAST(e."tolazamide" = 'Down' AS INTEGER)
        + CAST(e."examide" = 'Down' AS INTEGER)
        + CAST(e."citoglipton" = 'Down' AS INTEGER)
        + CAST(e."insulin" = 'Down' AS INTEGER)
        + CAST(e."glyburide-metformin" = 'Down' AS INTEGER)
        + CAST(e."glipizide-metformin" = 'Down' AS INTEGER)
        + CAST(e."glimepiride-pioglitazone" = 'Down' AS INTEGER)
        + CAST(e."metformin-rosiglitazone" = 'Down' AS INTEGER)
        + CAST(e."metformin-pioglitazone" = 'Down' AS INTEGER)
    ) AS INTEGER) AS medications_dosage_down,
    e.insulin AS insulin,
    e.metformin AS metformin,
    CAST(e.change = 'Ch' AS INTEGER) AS medication_changed,
    CAST(e."diabetesMed" = 'Yes' AS INTEGER) AS diabetes_medication,
    -- outcomes and cohort flags
    e.readmitted,
    CAST(e.discharge_disposition_id IN (11, 13, 14, 19, 20, 21) AS INTEGER) AS died_or_hospice
FROM encounters e
JOIN icd USING (encounter_id)
