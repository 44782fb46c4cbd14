CREATE INDEX CONCURRENTLY IF NOT EXISTS analysis_result_status_idx ON analysis_result (status) WHERE status <> 'approved';
