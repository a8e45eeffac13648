\set i random(20001, 30000)
SELECT kvx.get_new('default', 'k' || :i);
