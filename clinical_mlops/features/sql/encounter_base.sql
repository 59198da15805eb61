-- Engineered encounter features shared by every cohort on the Diabetes 130 extract.
-- Input: staging.encounters (validated, typed, patient ids pseudonymised).
-- One row per encounter; cohorts select their features, target and exclusions from this.
WITH encounters AS (
    SELECT * FROM staging.encounters
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
    -- sensitive attributes, with explicit "Unknown" rather than NULL
    coalesce(e.race, 'Unknown') AS race,
    coalesce(nullif(e.gender, 'Unknown/Invalid'), 'Unknown') AS gender,
    e.age AS age_band,
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
    CAST(({medications_prescribed}) AS INTEGER) AS medications_prescribed,
    CAST(({medications_up}) AS INTEGER) AS medications_dosage_up,
    CAST(({medications_down}) AS INTEGER) AS medications_dosage_down,
    e.insulin AS insulin,
    e.metformin AS metformin,
    CAST(e.change = 'Ch' AS INTEGER) AS medication_changed,
    CAST(e."diabetesMed" = 'Yes' AS INTEGER) AS diabetes_medication,
    -- outcomes and cohort flags
    e.readmitted,
    CAST(e.discharge_disposition_id IN (11, 13, 14, 19, 20, 21) AS INTEGER) AS died_or_hospice
FROM encounters e
JOIN icd USING (encounter_id)
