-- bench/kv_parts/layout: the four tables run.sh compares (see there).
DROP TABLE IF EXISTS plain, cur, hot, hotonly, chg;
CREATE TABLE plain (k text PRIMARY KEY, v jsonb);
CREATE TABLE cur (ns text COLLATE "C" NOT NULL, key text COLLATE "C" NOT NULL, value jsonb, ver_ts bigint NOT NULL,
  origin int NOT NULL, chg_xid xid8 NOT NULL DEFAULT pg_current_xact_id(), expires_at timestamptz, PRIMARY KEY (ns, key));
CREATE INDEX ON cur (origin, chg_xid, ns, key);
CREATE INDEX ON cur (ver_ts) WHERE value IS NULL;
CREATE INDEX ON cur (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE hot (ns text COLLATE "C" NOT NULL, key text COLLATE "C" NOT NULL, value jsonb, ver_ts bigint NOT NULL,
  origin int NOT NULL, chg_xid xid8 NOT NULL DEFAULT pg_current_xact_id(), expires_at timestamptz, PRIMARY KEY (ns, key)) WITH (fillfactor = 70);
CREATE TABLE hotonly (LIKE hot INCLUDING ALL) WITH (fillfactor = 70);
CREATE TABLE chg (origin int NOT NULL, chg_xid xid8 NOT NULL, ns text COLLATE "C" NOT NULL, key text COLLATE "C" NOT NULL);
CREATE INDEX ON chg (origin, chg_xid);
INSERT INTO plain SELECT 'k' || i, '1' FROM generate_series(1, 10000) i;
INSERT INTO cur (ns, key, value, ver_ts, origin) SELECT 'default', 'k' || i, '1', 1, 1 FROM generate_series(1, 10000) i;
INSERT INTO hot (ns, key, value, ver_ts, origin) SELECT 'default', 'k' || i, '1', 1, 1 FROM generate_series(1, 10000) i;
INSERT INTO hotonly (ns, key, value, ver_ts, origin) SELECT 'default', 'k' || i, '1', 1, 1 FROM generate_series(1, 10000) i;
VACUUM ANALYZE;
