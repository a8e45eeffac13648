\set i random(1, 10000)
SELECT kvx.put_data2('default', 'k' || :i, '1');
