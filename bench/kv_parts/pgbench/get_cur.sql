\set i random(1, 10000)
SELECT kvx.get_cur('default', 'k' || :i);
