DROP TYPE sample_status;
