\set i random(1, 10000)
SELECT kvx.get_none('default', 'k' || :i);
