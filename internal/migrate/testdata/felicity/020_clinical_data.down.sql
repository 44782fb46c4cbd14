DROP TABLE clinical_data;
