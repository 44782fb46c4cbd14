DROP INDEX CONCURRENTLY IF EXISTS analysis_result_sample_idx;
