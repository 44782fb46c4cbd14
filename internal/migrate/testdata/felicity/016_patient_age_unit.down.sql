ALTER TABLE patient DROP COLUMN age_unit;
