ALTER TABLE patient VALIDATE CONSTRAINT patient_client_fk;
