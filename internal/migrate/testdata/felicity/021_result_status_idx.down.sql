DROP INDEX CONCURRENTLY IF EXISTS analysis_result_status_idx;
