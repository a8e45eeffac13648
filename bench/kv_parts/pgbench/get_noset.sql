\set i random(1, 10000)
SELECT kvx.get_noset('default', 'k' || :i);
