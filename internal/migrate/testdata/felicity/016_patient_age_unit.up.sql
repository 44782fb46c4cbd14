ALTER TABLE patient ADD COLUMN age_unit text;
