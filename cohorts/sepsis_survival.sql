-- Base features of every cohort on the sepsis_survival source (UCI 827: age, sex, episode, outcome).
-- Input: source_rows, the source's validated, typed rows. The source has no encounter or patient id
-- and identical rows are legitimate, so a row's handle is its extract and position: encounter_id is a
-- hash of the two (stable when later extracts land). The sensitive attributes (sex, age_band) come
-- from the source contract.
SELECT
    CAST(hash(extract_id, row_number) % 9007199254740991 AS BIGINT) AS encounter_id,
    extract_id,
    row_number,
    age_years,
    sex_0male_1female AS female,
    episode_number,
    hospital_outcome_1alive_0dead
FROM source_rows
