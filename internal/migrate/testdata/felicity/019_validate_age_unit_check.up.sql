ALTER TABLE patient VALIDATE CONSTRAINT patient_age_unit_check;
