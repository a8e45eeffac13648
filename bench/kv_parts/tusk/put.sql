\set i random(0, 3999)
SELECT kv.put('default', :i, '{"n": 1}');
