\set i random(1, 10000)
SELECT v FROM public.plain WHERE k = 'k' || :i;
