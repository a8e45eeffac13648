\set i random(1, 10000)
SELECT kvx.get_sql('default', 'k' || :i);
