\set i random(0, 3999)
SELECT kv.get('default', :i);
