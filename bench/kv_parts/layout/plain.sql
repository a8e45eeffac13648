\set i random(1, 10000)
INSERT INTO plain (k, v) VALUES ('k' || :i, '1') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v;
