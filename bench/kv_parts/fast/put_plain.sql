\set i random(0, 3999)
INSERT INTO public.plain (k, v) VALUES (:i, '{"n": 1}') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v;
