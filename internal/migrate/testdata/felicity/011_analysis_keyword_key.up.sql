CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS analysis_keyword_key ON analysis (keyword);
