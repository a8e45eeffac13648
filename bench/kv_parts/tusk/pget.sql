\set i random(0, 3999)
SELECT v FROM plain WHERE k = :i;
