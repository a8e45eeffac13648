\set i random(1, 10000)
SELECT kvx.put_nosd('default', 'k' || :i, '1');
