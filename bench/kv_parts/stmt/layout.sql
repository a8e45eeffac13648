-- Two copies of kv.data for the replication index's width (stmt.sh's wide_put / narrow_put):
-- kvw.data with kv.data's indexes, kvn.data with (origin, chg_xid) in place of
-- (origin, chg_xid, ns, key); both filled with keys 0..3999. psql -d kv_shard_0 -f layout.sql
DROP SCHEMA IF EXISTS kvw CASCADE; DROP SCHEMA IF EXISTS kvn CASCADE;
CREATE SCHEMA kvw; CREATE SCHEMA kvn;
CREATE TABLE kvw.data (LIKE kv.data INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE kvw.data ADD CONSTRAINT data_pkey PRIMARY KEY (ns, key);
CREATE INDEX ON kvw.data (origin, chg_xid, ns, key);
CREATE INDEX ON kvw.data (ver_ts) WHERE value IS NULL;
CREATE INDEX ON kvw.data (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX ON kvw.data (ns, key) WHERE right(key, 2) IN (chr(31) || 'r', chr(31) || 'e', chr(31) || 'x');
CREATE TABLE kvn.data (LIKE kv.data INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE kvn.data ADD CONSTRAINT data_pkey PRIMARY KEY (ns, key);
CREATE INDEX ON kvn.data (origin, chg_xid);
CREATE INDEX ON kvn.data (ver_ts) WHERE value IS NULL;
CREATE INDEX ON kvn.data (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX ON kvn.data (ns, key) WHERE right(key, 2) IN (chr(31) || 'r', chr(31) || 'e', chr(31) || 'x');
INSERT INTO kvw.data SELECT * FROM kv.data; INSERT INTO kvn.data SELECT * FROM kv.data;
GRANT USAGE ON SCHEMA kvw, kvn TO kv_router; GRANT ALL ON kvw.data, kvn.data TO kv_router;
VACUUM ANALYZE kvw.data; VACUUM ANALYZE kvn.data;
-- kvp.data: the primary key and the replication index only (no partial index); kvh.data: the
-- primary key only (its updates can be HOT). stmt.sh's lay_w / lay_p / lay_h: the same upsert
-- from VALUES (no check, no kv.identity) into kvw, kvp, kvh.
DROP SCHEMA IF EXISTS kvp CASCADE; DROP SCHEMA IF EXISTS kvh CASCADE;
CREATE SCHEMA kvp; CREATE SCHEMA kvh;
CREATE TABLE kvp.data (LIKE kv.data INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE kvp.data ADD CONSTRAINT data_pkey PRIMARY KEY (ns, key);
CREATE INDEX ON kvp.data (origin, chg_xid, ns, key);
CREATE TABLE kvh.data (LIKE kv.data INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE kvh.data ADD CONSTRAINT data_pkey PRIMARY KEY (ns, key);
INSERT INTO kvp.data SELECT * FROM kv.data; INSERT INTO kvh.data SELECT * FROM kv.data;
GRANT USAGE ON SCHEMA kvp, kvh TO kv_router; GRANT ALL ON kvp.data, kvh.data TO kv_router;
VACUUM ANALYZE kvp.data; VACUUM ANALYZE kvh.data;
