\set i random(1, 10000)
SELECT kvx.put_data1('default', 'k' || :i, '1');
