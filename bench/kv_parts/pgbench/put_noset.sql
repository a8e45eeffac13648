\set i random(1, 10000)
SELECT kvx.put_noset('default', 'k' || :i, '1');
