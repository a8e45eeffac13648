\set i random(20001, 30000)
SELECT kv.get('default', 'k' || :i);
