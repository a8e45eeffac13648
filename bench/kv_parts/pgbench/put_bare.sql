\set i random(1, 10000)
SELECT kvx.put_bare('k' || :i, '1');
