CREATE TABLE patient_identification (uid bigserial PRIMARY KEY, patient_uid bigint NOT NULL REFERENCES patient (uid), identification text NOT NULL, value text NOT NULL);
