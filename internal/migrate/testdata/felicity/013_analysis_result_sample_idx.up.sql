CREATE INDEX CONCURRENTLY IF NOT EXISTS analysis_result_sample_idx ON analysis_result (sample_uid);
