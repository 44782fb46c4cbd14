CREATE INDEX CONCURRENTLY IF NOT EXISTS sample_patient_idx ON sample (patient_uid);
