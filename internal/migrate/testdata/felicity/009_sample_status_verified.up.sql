ALTER TYPE sample_status ADD VALUE IF NOT EXISTS 'verified' BEFORE 'published';
