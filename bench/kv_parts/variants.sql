-- scratch: all keys pass the shard check (same expression evaluated)
UPDATE kv.identity SET nshards = 1, shard = 0;
DROP SCHEMA IF EXISTS kvx CASCADE;
CREATE SCHEMA kvx AUTHORIZATION kv_owner;
GRANT USAGE ON SCHEMA kvx TO kv_client;
SET ROLE kv_owner;
-- kv.data copy with only the primary key
CREATE TABLE kvx.data1 (LIKE kv.data INCLUDING DEFAULTS); ALTER TABLE kvx.data1 ADD PRIMARY KEY (ns, key);
-- kv.data copy with pkey + replication index only (no partial)
CREATE TABLE kvx.data2 (LIKE kv.data INCLUDING DEFAULTS); ALTER TABLE kvx.data2 ADD PRIMARY KEY (ns, key);
CREATE INDEX ON kvx.data2 (origin, chg_xid, ns, key);
-- kv.data copy, pkey only and no chg_xid change (HOT possible for value-only change)
CREATE TABLE kvx.data3 (LIKE kv.data INCLUDING DEFAULTS); ALTER TABLE kvx.data3 ADD PRIMARY KEY (ns, key);
-- The variants (pg_get_functiondef of what was measured).
CREATE OR REPLACE FUNCTION kvx.get_bare(k text)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
  RETURN (SELECT p.v FROM public.plain p WHERE p.k = get_bare.k);
END $function$
;
CREATE OR REPLACE FUNCTION kvx.get_cur(ns text, key text)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
  v jsonb;
BEGIN
  IF ns IS NOT NULL AND key IS NOT NULL AND octet_length(key) <= 1024 AND key <> '' AND strpos(key, chr(31)) = 0 THEN
    SELECT (SELECT d.value FROM kv.data d
             WHERE d.ns = get_cur.ns AND d.key = get_cur.key AND d.value IS NOT NULL
               AND (d.expires_at IS NULL OR d.expires_at > now()))
      INTO v FROM kv.identity i JOIN kv.namespaces n ON n.ns = get_cur.ns
     WHERE ((pg_catalog.hashtextextended(get_cur.ns || ':' || get_cur.key, 0) & 9223372036854775807) % i.nshards)::int
           = i.shard;
    IF FOUND THEN
      RETURN v;
    END IF;
  END IF;
  PERFORM kv._check(ns, key);
  SELECT d.value INTO v FROM kv.data d
   WHERE d.ns = get_cur.ns AND d.key = get_cur.key AND d.value IS NOT NULL
     AND (d.expires_at IS NULL OR d.expires_at > now());
  RETURN v;
END
$function$
;
CREATE OR REPLACE FUNCTION kvx.get_id(ns text, key text)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE v jsonb;
BEGIN
  SELECT (SELECT d.value FROM kv.data d WHERE d.ns = get_id.ns AND d.key = get_id.key AND d.value IS NOT NULL
           AND (d.expires_at IS NULL OR d.expires_at > now()))
    INTO v FROM kv.identity i WHERE ((pg_catalog.hashtextextended(get_id.ns || ':' || get_id.key, 0) & 9223372036854775807) % i.nshards)::int = i.shard;
  RETURN v;
END $function$
;
CREATE OR REPLACE FUNCTION kvx.get_new(ns text, key text)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
  v jsonb;
BEGIN
  IF ns IS NOT NULL AND key IS NOT NULL AND octet_length(key) <= 1024 AND key <> '' AND strpos(key, chr(31)) = 0 THEN
    SELECT d.value INTO v FROM kv.data d JOIN kv.namespaces n ON n.ns = get_new.ns
     WHERE d.ns = get_new.ns AND d.key = get_new.key AND d.value IS NOT NULL
       AND (d.expires_at IS NULL OR d.expires_at > now());
    IF FOUND THEN
      RETURN v;
    END IF;
    PERFORM FROM kv.identity i JOIN kv.namespaces n ON n.ns = get_new.ns
     WHERE ((pg_catalog.hashtextextended(get_new.ns || ':' || get_new.key, 0) & 9223372036854775807) % i.nshards)::int
           = i.shard;
    IF FOUND THEN
      RETURN NULL;
    END IF;
  END IF;
  PERFORM kv._check(ns, key);
  SELECT d.value INTO v FROM kv.data d
   WHERE d.ns = get_new.ns AND d.key = get_new.key AND d.value IS NOT NULL
     AND (d.expires_at IS NULL OR d.expires_at > now());
  RETURN v;
END
$function$
;
CREATE OR REPLACE FUNCTION kvx.get_none(ns text, key text)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE v jsonb;
BEGIN
  SELECT d.value INTO v FROM kv.data d WHERE d.ns = get_none.ns AND d.key = get_none.key AND d.value IS NOT NULL
           AND (d.expires_at IS NULL OR d.expires_at > now());
  RETURN v;
END $function$
;
CREATE OR REPLACE FUNCTION kvx.get_nosd(ns text, key text)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
  v jsonb;
BEGIN
  IF ns IS NOT NULL AND key IS NOT NULL AND octet_length(key) <= 1024 AND key <> '' AND strpos(key, chr(31)) = 0 THEN
    SELECT (SELECT d.value FROM kv.data d
             WHERE d.ns = get_nosd.ns AND d.key = get_nosd.key AND d.value IS NOT NULL
               AND (d.expires_at IS NULL OR d.expires_at > now()))
      INTO v FROM kv.identity i JOIN kv.namespaces n ON n.ns = get_nosd.ns
     WHERE ((pg_catalog.hashtextextended(get_nosd.ns || ':' || get_nosd.key, 0) & 9223372036854775807) % i.nshards)::int
           = i.shard;
    IF FOUND THEN
      RETURN v;
    END IF;
  END IF;
  PERFORM kv._check(ns, key);
  SELECT d.value INTO v FROM kv.data d
   WHERE d.ns = get_nosd.ns AND d.key = get_nosd.key AND d.value IS NOT NULL
     AND (d.expires_at IS NULL OR d.expires_at > now());
  RETURN v;
END
$function$
;
CREATE OR REPLACE FUNCTION kvx.get_noset(ns text, key text)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
AS $function$
DECLARE
  v jsonb;
BEGIN
  IF ns IS NOT NULL AND key IS NOT NULL AND octet_length(key) <= 1024 AND key <> '' AND strpos(key, chr(31)) = 0 THEN
    SELECT (SELECT d.value FROM kv.data d
             WHERE d.ns = get_noset.ns AND d.key = get_noset.key AND d.value IS NOT NULL
               AND (d.expires_at IS NULL OR d.expires_at > now()))
      INTO v FROM kv.identity i JOIN kv.namespaces n ON n.ns = get_noset.ns
     WHERE ((pg_catalog.hashtextextended(get_noset.ns || ':' || get_noset.key, 0) & 9223372036854775807) % i.nshards)::int
           = i.shard;
    IF FOUND THEN
      RETURN v;
    END IF;
  END IF;
  PERFORM kv._check(ns, key);
  SELECT d.value INTO v FROM kv.data d
   WHERE d.ns = get_noset.ns AND d.key = get_noset.key AND d.value IS NOT NULL
     AND (d.expires_at IS NULL OR d.expires_at > now());
  RETURN v;
END
$function$
;
CREATE OR REPLACE FUNCTION kvx.get_ns(ns text, key text)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE v jsonb;
BEGIN
  SELECT (SELECT d.value FROM kv.data d WHERE d.ns = get_ns.ns AND d.key = get_ns.key AND d.value IS NOT NULL
           AND (d.expires_at IS NULL OR d.expires_at > now()))
    INTO v FROM kv.namespaces n WHERE n.ns = get_ns.ns;
  RETURN v;
END $function$
;
CREATE OR REPLACE FUNCTION kvx.get_sql(ns text, key text)
 RETURNS jsonb
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT (SELECT d.value FROM kv.data d WHERE d.ns = get_sql.ns AND d.key = get_sql.key AND d.value IS NOT NULL
               AND (d.expires_at IS NULL OR d.expires_at > now()))
      FROM kv.identity i JOIN kv.namespaces n ON n.ns = get_sql.ns
     WHERE ((pg_catalog.hashtextextended(get_sql.ns || ':' || get_sql.key, 0) & 9223372036854775807) % i.nshards)::int = i.shard
$function$
;
CREATE OR REPLACE FUNCTION kvx.put_bare(k text, v jsonb)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
  INSERT INTO public.plain AS p (k, v) VALUES ($1, $2) ON CONFLICT ON CONSTRAINT plain_pkey DO UPDATE SET v = EXCLUDED.v;
  RETURN 1;
END $function$
;
CREATE OR REPLACE FUNCTION kvx.put_cur(ns text, key text, value jsonb, ttl interval DEFAULT NULL::interval)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
  pol kv.expiry_policies;
  v bigint;
BEGIN
  -- The common case in one statement: the key's form, the value and a positive ttl here, the
  -- namespace, the shard and max_ttl in the INSERT's WHERE (kv._expiry's rules). Nothing
  -- written: a check failed, and the checked path below raises its reason.
  IF ns IS NOT NULL AND key IS NOT NULL AND octet_length(key) <= 1024 AND key <> '' AND strpos(key, chr(31)) = 0
     AND value IS NOT NULL AND pg_column_size(value) <= 1048576 AND (ttl IS NULL OR ttl > interval '0') THEN
    INSERT INTO kv.data AS d (ns, key, value, ver_ts, origin, expires_at)
    SELECT put_cur.ns, put_cur.key, put_cur.value, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us,
           i.origin, now() + coalesce(put_cur.ttl, p.default_ttl)
      FROM kv.identity i JOIN kv.namespaces n ON n.ns = put_cur.ns LEFT JOIN kv.expiry_policies p ON p.name = n.policy
     WHERE ((pg_catalog.hashtextextended(put_cur.ns || ':' || put_cur.key, 0) & 9223372036854775807) % i.nshards)::int
           = i.shard
       AND (put_cur.ttl IS NULL OR p.max_ttl IS NULL OR put_cur.ttl <= p.max_ttl)
    ON CONFLICT ON CONSTRAINT data_pkey DO UPDATE SET value = EXCLUDED.value,
       ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, expires_at = EXCLUDED.expires_at,
       chg_xid = pg_current_xact_id()
    RETURNING d.ver_ts INTO v;
    IF FOUND THEN
      RETURN v;
    END IF;
  END IF;
  pol := kv._check(ns, key);
  PERFORM kv._check_value(value);
  -- kv._upsert's local write (is_local, no delta), written out here so that PL/pgSQL keeps
  -- its plan for the session: through the SQL functions it was planned again on every call.
  INSERT INTO kv.data AS d (ns, key, value, ver_ts, origin, expires_at)
  SELECT put_cur.ns, put_cur.key, put_cur.value, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us,
         i.origin, kv._expiry(pol, ttl) FROM kv.identity i
  ON CONFLICT ON CONSTRAINT data_pkey DO UPDATE SET value = EXCLUDED.value,
     ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, expires_at = EXCLUDED.expires_at,
     chg_xid = pg_current_xact_id()
  RETURNING d.ver_ts INTO v;
  RETURN v;
END
$function$
;
CREATE OR REPLACE FUNCTION kvx.put_data1(ns text, key text, value jsonb, ttl interval DEFAULT NULL::interval)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
  pol kv.expiry_policies;
  v bigint;
BEGIN
  -- The common case in one statement: the key's form, the value and a positive ttl here, the
  -- namespace, the shard and max_ttl in the INSERT's WHERE (kv._expiry's rules). Nothing
  -- written: a check failed, and the checked path below raises its reason.
  IF ns IS NOT NULL AND key IS NOT NULL AND octet_length(key) <= 1024 AND key <> '' AND strpos(key, chr(31)) = 0
     AND value IS NOT NULL AND pg_column_size(value) <= 1048576 AND (ttl IS NULL OR ttl > interval '0') THEN
    INSERT INTO kvx.data1 AS d (ns, key, value, ver_ts, origin, expires_at)
    SELECT put_data1.ns, put_data1.key, put_data1.value, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us,
           i.origin, now() + coalesce(put_data1.ttl, p.default_ttl)
      FROM kv.identity i JOIN kv.namespaces n ON n.ns = put_data1.ns LEFT JOIN kv.expiry_policies p ON p.name = n.policy
     WHERE ((pg_catalog.hashtextextended(put_data1.ns || ':' || put_data1.key, 0) & 9223372036854775807) % i.nshards)::int
           = i.shard
       AND (put_data1.ttl IS NULL OR p.max_ttl IS NULL OR put_data1.ttl <= p.max_ttl)
    ON CONFLICT ON CONSTRAINT data1_pkey DO UPDATE SET value = EXCLUDED.value,
       ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, expires_at = EXCLUDED.expires_at,
       chg_xid = pg_current_xact_id()
    RETURNING d.ver_ts INTO v;
    IF FOUND THEN
      RETURN v;
    END IF;
  END IF;
  pol := kv._check(ns, key);
  PERFORM kv._check_value(value);
  -- kv._upsert's local write (is_local, no delta), written out here so that PL/pgSQL keeps
  -- its plan for the session: through the SQL functions it was planned again on every call.
  INSERT INTO kvx.data1 AS d (ns, key, value, ver_ts, origin, expires_at)
  SELECT put_data1.ns, put_data1.key, put_data1.value, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us,
         i.origin, kv._expiry(pol, ttl) FROM kv.identity i
  ON CONFLICT ON CONSTRAINT data1_pkey DO UPDATE SET value = EXCLUDED.value,
     ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, expires_at = EXCLUDED.expires_at,
     chg_xid = pg_current_xact_id()
  RETURNING d.ver_ts INTO v;
  RETURN v;
END
$function$
;
CREATE OR REPLACE FUNCTION kvx.put_data2(ns text, key text, value jsonb, ttl interval DEFAULT NULL::interval)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
  pol kv.expiry_policies;
  v bigint;
BEGIN
  -- The common case in one statement: the key's form, the value and a positive ttl here, the
  -- namespace, the shard and max_ttl in the INSERT's WHERE (kv._expiry's rules). Nothing
  -- written: a check failed, and the checked path below raises its reason.
  IF ns IS NOT NULL AND key IS NOT NULL AND octet_length(key) <= 1024 AND key <> '' AND strpos(key, chr(31)) = 0
     AND value IS NOT NULL AND pg_column_size(value) <= 1048576 AND (ttl IS NULL OR ttl > interval '0') THEN
    INSERT INTO kvx.data2 AS d (ns, key, value, ver_ts, origin, expires_at)
    SELECT put_data2.ns, put_data2.key, put_data2.value, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us,
           i.origin, now() + coalesce(put_data2.ttl, p.default_ttl)
      FROM kv.identity i JOIN kv.namespaces n ON n.ns = put_data2.ns LEFT JOIN kv.expiry_policies p ON p.name = n.policy
     WHERE ((pg_catalog.hashtextextended(put_data2.ns || ':' || put_data2.key, 0) & 9223372036854775807) % i.nshards)::int
           = i.shard
       AND (put_data2.ttl IS NULL OR p.max_ttl IS NULL OR put_data2.ttl <= p.max_ttl)
    ON CONFLICT ON CONSTRAINT data2_pkey DO UPDATE SET value = EXCLUDED.value,
       ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, expires_at = EXCLUDED.expires_at,
       chg_xid = pg_current_xact_id()
    RETURNING d.ver_ts INTO v;
    IF FOUND THEN
      RETURN v;
    END IF;
  END IF;
  pol := kv._check(ns, key);
  PERFORM kv._check_value(value);
  -- kv._upsert's local write (is_local, no delta), written out here so that PL/pgSQL keeps
  -- its plan for the session: through the SQL functions it was planned again on every call.
  INSERT INTO kvx.data2 AS d (ns, key, value, ver_ts, origin, expires_at)
  SELECT put_data2.ns, put_data2.key, put_data2.value, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us,
         i.origin, kv._expiry(pol, ttl) FROM kv.identity i
  ON CONFLICT ON CONSTRAINT data2_pkey DO UPDATE SET value = EXCLUDED.value,
     ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, expires_at = EXCLUDED.expires_at,
     chg_xid = pg_current_xact_id()
  RETURNING d.ver_ts INTO v;
  RETURN v;
END
$function$
;
CREATE OR REPLACE FUNCTION kvx.put_data3(ns text, key text, value jsonb, ttl interval DEFAULT NULL::interval)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
  pol kv.expiry_policies;
  v bigint;
BEGIN
  -- The common case in one statement: the key's form, the value and a positive ttl here, the
  -- namespace, the shard and max_ttl in the INSERT's WHERE (kv._expiry's rules). Nothing
  -- written: a check failed, and the checked path below raises its reason.
  IF ns IS NOT NULL AND key IS NOT NULL AND octet_length(key) <= 1024 AND key <> '' AND strpos(key, chr(31)) = 0
     AND value IS NOT NULL AND pg_column_size(value) <= 1048576 AND (ttl IS NULL OR ttl > interval '0') THEN
    INSERT INTO kvx.data3 AS d (ns, key, value, ver_ts, origin, expires_at)
    SELECT put_data3.ns, put_data3.key, put_data3.value, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us,
           i.origin, now() + coalesce(put_data3.ttl, p.default_ttl)
      FROM kv.identity i JOIN kv.namespaces n ON n.ns = put_data3.ns LEFT JOIN kv.expiry_policies p ON p.name = n.policy
     WHERE ((pg_catalog.hashtextextended(put_data3.ns || ':' || put_data3.key, 0) & 9223372036854775807) % i.nshards)::int
           = i.shard
       AND (put_data3.ttl IS NULL OR p.max_ttl IS NULL OR put_data3.ttl <= p.max_ttl)
    ON CONFLICT ON CONSTRAINT data3_pkey DO UPDATE SET value = EXCLUDED.value,
       ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, expires_at = EXCLUDED.expires_at
    RETURNING d.ver_ts INTO v;
    IF FOUND THEN
      RETURN v;
    END IF;
  END IF;
  pol := kv._check(ns, key);
  PERFORM kv._check_value(value);
  -- kv._upsert's local write (is_local, no delta), written out here so that PL/pgSQL keeps
  -- its plan for the session: through the SQL functions it was planned again on every call.
  INSERT INTO kvx.data3 AS d (ns, key, value, ver_ts, origin, expires_at)
  SELECT put_data3.ns, put_data3.key, put_data3.value, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us,
         i.origin, kv._expiry(pol, ttl) FROM kv.identity i
  ON CONFLICT ON CONSTRAINT data3_pkey DO UPDATE SET value = EXCLUDED.value,
     ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, expires_at = EXCLUDED.expires_at,
     chg_xid = pg_current_xact_id()
  RETURNING d.ver_ts INTO v;
  RETURN v;
END
$function$
;
CREATE OR REPLACE FUNCTION kvx.put_nosd(ns text, key text, value jsonb, ttl interval DEFAULT NULL::interval)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
  pol kv.expiry_policies;
  v bigint;
BEGIN
  -- The common case in one statement: the key's form, the value and a positive ttl here, the
  -- namespace, the shard and max_ttl in the INSERT's WHERE (kv._expiry's rules). Nothing
  -- written: a check failed, and the checked path below raises its reason.
  IF ns IS NOT NULL AND key IS NOT NULL AND octet_length(key) <= 1024 AND key <> '' AND strpos(key, chr(31)) = 0
     AND value IS NOT NULL AND pg_column_size(value) <= 1048576 AND (ttl IS NULL OR ttl > interval '0') THEN
    INSERT INTO kv.data AS d (ns, key, value, ver_ts, origin, expires_at)
    SELECT put_nosd.ns, put_nosd.key, put_nosd.value, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us,
           i.origin, now() + coalesce(put_nosd.ttl, p.default_ttl)
      FROM kv.identity i JOIN kv.namespaces n ON n.ns = put_nosd.ns LEFT JOIN kv.expiry_policies p ON p.name = n.policy
     WHERE ((pg_catalog.hashtextextended(put_nosd.ns || ':' || put_nosd.key, 0) & 9223372036854775807) % i.nshards)::int
           = i.shard
       AND (put_nosd.ttl IS NULL OR p.max_ttl IS NULL OR put_nosd.ttl <= p.max_ttl)
    ON CONFLICT ON CONSTRAINT data_pkey DO UPDATE SET value = EXCLUDED.value,
       ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, expires_at = EXCLUDED.expires_at,
       chg_xid = pg_current_xact_id()
    RETURNING d.ver_ts INTO v;
    IF FOUND THEN
      RETURN v;
    END IF;
  END IF;
  pol := kv._check(ns, key);
  PERFORM kv._check_value(value);
  -- kv._upsert's local write (is_local, no delta), written out here so that PL/pgSQL keeps
  -- its plan for the session: through the SQL functions it was planned again on every call.
  INSERT INTO kv.data AS d (ns, key, value, ver_ts, origin, expires_at)
  SELECT put_nosd.ns, put_nosd.key, put_nosd.value, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us,
         i.origin, kv._expiry(pol, ttl) FROM kv.identity i
  ON CONFLICT ON CONSTRAINT data_pkey DO UPDATE SET value = EXCLUDED.value,
     ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, expires_at = EXCLUDED.expires_at,
     chg_xid = pg_current_xact_id()
  RETURNING d.ver_ts INTO v;
  RETURN v;
END
$function$
;
CREATE OR REPLACE FUNCTION kvx.put_noset(ns text, key text, value jsonb, ttl interval DEFAULT NULL::interval)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
AS $function$
DECLARE
  pol kv.expiry_policies;
  v bigint;
BEGIN
  -- The common case in one statement: the key's form, the value and a positive ttl here, the
  -- namespace, the shard and max_ttl in the INSERT's WHERE (kv._expiry's rules). Nothing
  -- written: a check failed, and the checked path below raises its reason.
  IF ns IS NOT NULL AND key IS NOT NULL AND octet_length(key) <= 1024 AND key <> '' AND strpos(key, chr(31)) = 0
     AND value IS NOT NULL AND pg_column_size(value) <= 1048576 AND (ttl IS NULL OR ttl > interval '0') THEN
    INSERT INTO kv.data AS d (ns, key, value, ver_ts, origin, expires_at)
    SELECT put_noset.ns, put_noset.key, put_noset.value, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us,
           i.origin, now() + coalesce(put_noset.ttl, p.default_ttl)
      FROM kv.identity i JOIN kv.namespaces n ON n.ns = put_noset.ns LEFT JOIN kv.expiry_policies p ON p.name = n.policy
     WHERE ((pg_catalog.hashtextextended(put_noset.ns || ':' || put_noset.key, 0) & 9223372036854775807) % i.nshards)::int
           = i.shard
       AND (put_noset.ttl IS NULL OR p.max_ttl IS NULL OR put_noset.ttl <= p.max_ttl)
    ON CONFLICT ON CONSTRAINT data_pkey DO UPDATE SET value = EXCLUDED.value,
       ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, expires_at = EXCLUDED.expires_at,
       chg_xid = pg_current_xact_id()
    RETURNING d.ver_ts INTO v;
    IF FOUND THEN
      RETURN v;
    END IF;
  END IF;
  pol := kv._check(ns, key);
  PERFORM kv._check_value(value);
  -- kv._upsert's local write (is_local, no delta), written out here so that PL/pgSQL keeps
  -- its plan for the session: through the SQL functions it was planned again on every call.
  INSERT INTO kv.data AS d (ns, key, value, ver_ts, origin, expires_at)
  SELECT put_noset.ns, put_noset.key, put_noset.value, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us,
         i.origin, kv._expiry(pol, ttl) FROM kv.identity i
  ON CONFLICT ON CONSTRAINT data_pkey DO UPDATE SET value = EXCLUDED.value,
     ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, expires_at = EXCLUDED.expires_at,
     chg_xid = pg_current_xact_id()
  RETURNING d.ver_ts INTO v;
  RETURN v;
END
$function$
;
CREATE OR REPLACE FUNCTION kvx.put_sql(ns text, key text, value jsonb, ttl interval DEFAULT NULL::interval)
 RETURNS bigint
 LANGUAGE sql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    INSERT INTO kv.data AS d (ns, key, value, ver_ts, origin, expires_at)
    SELECT put_sql.ns, put_sql.key, put_sql.value, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us,
           i.origin, now() + coalesce(put_sql.ttl, p.default_ttl)
      FROM kv.identity i JOIN kv.namespaces n ON n.ns = put_sql.ns LEFT JOIN kv.expiry_policies p ON p.name = n.policy
     WHERE ((pg_catalog.hashtextextended(put_sql.ns || ':' || put_sql.key, 0) & 9223372036854775807) % i.nshards)::int = i.shard
       AND (put_sql.ttl IS NULL OR p.max_ttl IS NULL OR put_sql.ttl <= p.max_ttl)
    ON CONFLICT ON CONSTRAINT data_pkey DO UPDATE SET value = EXCLUDED.value,
       ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, expires_at = EXCLUDED.expires_at,
       chg_xid = pg_current_xact_id()
    RETURNING d.ver_ts
$function$
;
ALTER FUNCTION kvx.put_bare(text, jsonb) OWNER TO kv_owner; ALTER FUNCTION kvx.get_bare(text) OWNER TO kv_owner;
RESET ROLE;
GRANT ALL ON ALL TABLES IN SCHEMA kvx TO kv_client;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA kvx TO kv_client;
INSERT INTO public.plain SELECT 'k' || i, '1' FROM generate_series(1, 10000) i ON CONFLICT DO NOTHING;
SELECT count(kv.put('default', 'k' || i, '1')) FROM generate_series(1, 10000) i;
INSERT INTO kvx.data1 SELECT * FROM kv.data; INSERT INTO kvx.data2 SELECT * FROM kv.data; INSERT INTO kvx.data3 SELECT * FROM kv.data;
VACUUM ANALYZE kv.data, kvx.data1, kvx.data2, kvx.data3, public.plain;
