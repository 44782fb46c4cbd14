DROP TABLE patient_identification;
