\set i random(1, 10000)
SELECT kvx.put_sql('default', 'k' || :i, '1');
