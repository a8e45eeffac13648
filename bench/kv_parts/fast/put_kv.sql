\set i random(0, 3999)
SELECT kv.put('default', :i::text, '{"n": 1}'::jsonb, NULL::interval);
