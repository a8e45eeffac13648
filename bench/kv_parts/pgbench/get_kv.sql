\set i random(1, 10000)
SELECT kv.get('default', 'k' || :i);
