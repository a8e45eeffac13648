\set i random(1, 10000)
SELECT kvx.put_data3('default', 'k' || :i, '1');
