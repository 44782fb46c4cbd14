ALTER TABLE patient DROP CONSTRAINT patient_client_fk;
