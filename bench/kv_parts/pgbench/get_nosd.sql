\set i random(1, 10000)
SELECT kvx.get_nosd('default', 'k' || :i);
