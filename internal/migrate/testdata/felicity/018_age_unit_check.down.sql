ALTER TABLE patient DROP CONSTRAINT patient_age_unit_check;
