CREATE TABLE analysis (uid bigserial PRIMARY KEY, name text NOT NULL, keyword text NOT NULL, unit text);
