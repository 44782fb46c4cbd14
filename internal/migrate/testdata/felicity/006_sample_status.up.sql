CREATE TYPE sample_status AS ENUM ('received', 'published');
