-- For fid_put (docs/kv.md, "Speed", fourteenth step): kv.identity's values as IMMUTABLE SQL
-- functions returning constants, made by hand on kv_shard_0 after stmt.sh set it to one shard
-- (origin 1, shard 0 of 1, offset 0; put the shard's catalog version where CV is). Run as
-- postgres: psql -d kv_shard_0 -v cv=CV -f fid.sql
SET ROLE kv_owner;
CREATE OR REPLACE FUNCTION kv._id_origin() RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN 1;
CREATE OR REPLACE FUNCTION kv._id_shard() RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN 0;
CREATE OR REPLACE FUNCTION kv._id_nshards() RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN 1;
CREATE OR REPLACE FUNCTION kv._id_offset() RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN 0;
CREATE OR REPLACE FUNCTION kv._id_cv() RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN :cv;
RESET ROLE;
GRANT EXECUTE ON FUNCTION kv._id_origin(), kv._id_shard(), kv._id_nshards(), kv._id_offset(), kv._id_cv() TO kv_router;
