\set i random(1, 10000)
SELECT kv.put('default', 'k' || :i, '1');
