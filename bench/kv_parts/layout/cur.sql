\set i random(1, 10000)
INSERT INTO cur AS d (ns, key, value, ver_ts, origin) VALUES ('default', 'k' || :i, '1', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, 1) ON CONFLICT (ns, key) DO UPDATE SET value = EXCLUDED.value, ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, expires_at = EXCLUDED.expires_at, chg_xid = pg_current_xact_id();
