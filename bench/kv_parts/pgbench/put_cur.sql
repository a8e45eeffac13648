\set i random(1, 10000)
SELECT kvx.put_cur('default', 'k' || :i, '1');
