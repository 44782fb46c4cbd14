CREATE TABLE result_mutation (uid bigserial PRIMARY KEY, result_uid bigint NOT NULL REFERENCES analysis_result (uid), before text, after text, mutated_at timestamptz NOT NULL DEFAULT now());
