INSERT INTO plain (k, v) VALUES ('0', '{"n": 1}') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v;
