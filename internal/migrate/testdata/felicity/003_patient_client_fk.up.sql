ALTER TABLE patient ADD CONSTRAINT patient_client_fk FOREIGN KEY (client_uid) REFERENCES client (uid) NOT VALID;
