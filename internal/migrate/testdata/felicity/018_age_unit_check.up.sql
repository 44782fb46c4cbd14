ALTER TABLE patient ADD CONSTRAINT patient_age_unit_check CHECK (age_unit IN ('days', 'months', 'years')) NOT VALID;
