CREATE TABLE client (uid bigserial PRIMARY KEY, name text NOT NULL, code text NOT NULL);
