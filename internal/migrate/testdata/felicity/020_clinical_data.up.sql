CREATE TABLE clinical_data (uid bigserial PRIMARY KEY, patient_uid bigint NOT NULL REFERENCES patient (uid), symptoms text, treatment_notes text);
