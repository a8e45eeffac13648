\set i random(1, 10000)
INSERT INTO kv.data AS d (ns, key, value, ver_ts, origin) VALUES ('default', 'k' || :i, '1', 1, 1) ON CONFLICT (ns, key) DO UPDATE SET value = EXCLUDED.value;
